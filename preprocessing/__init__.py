"""Tokenization into doc-stride windows and answer-span decoding, shared by the Triton Python models.

Pure Python (numpy + HF ``tokenizers``); nothing here imports Triton.
"""

from preprocessing.decode import DecodedAnswers, decode
from preprocessing.errors import InputError
from preprocessing.requests import AnswerOptions, RequestLimits, decode_texts
from preprocessing.tokenize import NO_OFFSET, QATokenizer, Windows, WindowSettings

__all__ = [
    "AnswerOptions",
    "DecodedAnswers",
    "InputError",
    "NO_OFFSET",
    "QATokenizer",
    "RequestLimits",
    "Windows",
    "WindowSettings",
    "decode",
    "decode_texts",
]
