"""A thin, typed client for the ``electra_qa`` Triton ensemble.

from client import TritonQA
qa = TritonQA("localhost:8001")
qa({"question": "...", "context": "..."})   # same call and result as pipeline('question-answering')

The names are imported from their modules on first use: ``import client`` (and ``client.names``) costs no
tritonclient import, ``client.TritonQA`` does.
"""

from client.names import DEFAULT_URL, ENSEMBLE

TYPE_CHECKING = False  # typing's, without importing typing; mypy reads it as True
if TYPE_CHECKING:
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
    from client.stream import DEFAULT_BATCH_SIZE, DEFAULT_IN_FLIGHT
    from client.sync import TritonQA

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_IN_FLIGHT",
    "DEFAULT_URL",
    "ENSEMBLE",
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

# the module of each name imported on first use (the imports above, for type checkers)
_LAZY = {
    "AsyncTritonQA": "client.aio",
    "Answer": "client.answer",
    "NO_RETRIES": "client.connection",
    "TLS": "client.connection",
    "ChannelSettings": "client.connection",
    "RetryPolicy": "client.connection",
    "AuthenticationError": "client.errors",
    "DeadlineExceededError": "client.errors",
    "InvalidInputError": "client.errors",
    "QAError": "client.errors",
    "ServerError": "client.errors",
    "ServerUnavailableError": "client.errors",
    "DEFAULT_BATCH_SIZE": "client.stream",
    "DEFAULT_IN_FLIGHT": "client.stream",
    "TritonQA": "client.sync",
}

if not TYPE_CHECKING:  # hidden from mypy, which reads the imports above: a misspelt name stays an error

    def __getattr__(name: str) -> object:
        """A name of ``__all__``, imported from its module on first use (an ordinary attribute from then on)."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    """The module's attributes, the names not imported yet included."""
    return sorted({*globals(), *__all__})
