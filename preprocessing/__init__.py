"""Per pair: tokenization into doc-stride windows and answer-span decoding, request options and limits — what
the Triton Python models compute, one (question, context) at a time or vectorised over many.

Pure Python (numpy + HF ``tokenizers``); nothing here imports Triton, nor the per-execute floor above it
(``runtime``: batching requests, budgets, the steps' tensors).
"""

from preprocessing.decode import DecodedAnswers, decode
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

__all__ = [
    "DECODER_PARAMETERS",
    "NO_OFFSET",
    "TOKENIZER_PARAMETERS",
    "AnswerOptions",
    "DecodedAnswers",
    "DecoderLimits",
    "InputError",
    "QATokenizer",
    "RequestLimits",
    "WindowSettings",
    "Windows",
    "decode",
    "read_pairs",
    "readable_texts",
]
