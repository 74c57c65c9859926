"""Tokenization into doc-stride windows and answer-span decoding, shared by the Triton Python models.

Pure Python (numpy + HF ``tokenizers``); nothing here imports Triton.
"""

from preprocessing.decode import DecodedAnswers, decode
from preprocessing.decode_batch import DecoderInput, decode_requests, measure_paces
from preprocessing.errors import InputError
from preprocessing.requests import (
    DECODER_PARAMETERS,
    TOKENIZER_PARAMETERS,
    AnswerOptions,
    DecoderLimits,
    RequestLimits,
    read_pairs,
    readable_texts,
)
from preprocessing.tokenize import NO_OFFSET, QATokenizer, Windows, WindowSettings
from preprocessing.tokenize_batch import tokenize_requests

__all__ = [
    "DECODER_PARAMETERS",
    "NO_OFFSET",
    "TOKENIZER_PARAMETERS",
    "AnswerOptions",
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
    "measure_paces",
    "read_pairs",
    "readable_texts",
    "tokenize_requests",
]
