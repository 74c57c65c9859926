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
    "NO_OFFSET",
    "TOKENIZER_PARAMETERS",
    "AnswerOptions",
    "Budget",
    "Busy",
    "DecodedAnswers",
    "DecoderInput",
    "DecoderLimits",
    "InputError",
    "QATokenizer",
    "RequestLimits",
    "WindowSettings",
    "Windows",
    "decode",
    "decode_requests",
    "read_pairs",
    "readable_texts",
    "tokenize_requests",
]
