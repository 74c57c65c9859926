"""Tokenization into doc-stride windows and answer-span decoding, shared by the Triton Python models.

Pure Python (numpy + HF ``tokenizers``); nothing here imports Triton.
"""

from preprocessing.batch import Budget, DecoderInput, decode_requests, tokenize_requests
from preprocessing.decode import DecodedAnswers, decode
from preprocessing.errors import Busy, InputError
from preprocessing.requests import (
    TOKENIZER_PARAMETERS,
    AnswerOptions,
    DecoderLimits,
    RequestLimits,
    read_pairs,
    readable_texts,
)
from preprocessing.tokenize import NO_OFFSET, QATokenizer, Windows, WindowSettings

__all__ = [
    "AnswerOptions",
    "Budget",
    "Busy",
    "DecodedAnswers",
    "DecoderInput",
    "DecoderLimits",
    "InputError",
    "NO_OFFSET",
    "QATokenizer",
    "RequestLimits",
    "TOKENIZER_PARAMETERS",
    "Windows",
    "WindowSettings",
    "decode",
    "decode_requests",
    "readable_texts",
    "read_pairs",
    "tokenize_requests",
]
