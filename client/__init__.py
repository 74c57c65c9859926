"""A thin, typed client for the ``electra_qa`` Triton ensemble.

from client import TritonQA
qa = TritonQA("localhost:8001")
qa({"question": "...", "context": "..."})   # same call and result as pipeline('question-answering')
"""

from client.aio import AsyncTritonQA
from client.answer import Answer
from client.connection import NO_RETRIES, TLS, ChannelSettings, RetryPolicy
from client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidInputError,
    QAError,
    ServerError,
    ServerUnavailableError,
)
from client.sync import TritonQA

__all__ = [
    "NO_RETRIES",
    "TLS",
    "Answer",
    "AsyncTritonQA",
    "AuthenticationError",
    "ChannelSettings",
    "DeadlineExceededError",
    "InvalidInputError",
    "QAError",
    "RetryPolicy",
    "ServerError",
    "ServerUnavailableError",
    "TritonQA",
]
