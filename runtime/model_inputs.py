"""What the encoder step accepts: windows as the tokenizer step makes them, checked request by request, so
that a request sent to the step directly with ids outside the vocabulary, a malformed mask or too many
tokens is refused (INVALID_ARGUMENT) without failing the requests batched with it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from preprocessing.errors import InputError, StepFault
from runtime.tensors import ATTENTION_BIT, GRAPH_INPUTS, unpack_tokens


@dataclass(frozen=True)
class PaddingStats:
    """Tokens of one run of the model step: real window tokens, and those executed (padding included)."""

    real_tokens: int
    executed_tokens: int


def per_request(logits: np.ndarray, requests) -> list[np.ndarray]:
    """``logits`` [sum W_i, L, 2] of the requests' windows stacked in order, as each request's own
    ``[W_i, L_i, 2]`` (contiguous: each becomes a response tensor)."""
    bounds = np.cumsum([len(r) for r in requests])[:-1]
    return [np.ascontiguousarray(part[:, : r.shape[1]]) for part, r in zip(np.split(logits, bounds), requests)]


def real_tokens(tokens: np.ndarray) -> int:
    """The tokens of packed windows that attend (``runtime.tensors``): what an engine runs of them."""
    return int(np.count_nonzero(tokens >= ATTENTION_BIT))


def finite_logits(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """``logits`` [W, L, 2] of one request's packed ``tokens`` [W, L], unless any of its real tokens' is NaN or
    infinite (an overflow in reduced precision, broken weights, a faulty device): then ``StepFault``, and the
    request fails rather than answering from them. Positions past a window's tokens are not looked at."""
    real = tokens >= ATTENTION_BIT
    bad = int((~np.isfinite(logits[real])).any(axis=-1).sum())
    if bad:
        raise StepFault(
            f"the model step computed non-finite logits (NaN or infinity) for {bad} of the request's "
            f"{real_tokens(tokens)} tokens; no answer is given from them"
        )
    return logits


@dataclass(frozen=True)
class ModelLimits:
    """The exported model's own limits, recorded by the export in ``export.json``."""

    vocab_size: int
    type_vocab_size: int | None  # None: the model takes no token types (those sent are never read)
    max_position_embeddings: int

    @classmethod
    def from_export(cls, version_dir: Path) -> ModelLimits:
        record = json.loads((version_dir / "export.json").read_text())
        return cls(**record["model_limits"])


def check_windows(
    input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray, limits: ModelLimits
) -> None:
    """Raises ``InputError`` unless the three ``[W, L]`` int64 tensors are windows the model can run:
    ids in the vocabulary, token types in range, each mask row ones then zeros (at least one token)."""
    for name, array in zip(GRAPH_INPUTS, (input_ids, attention_mask, token_type_ids)):
        if array.dtype != np.int64 or array.ndim != 2:
            raise InputError(f"{name} must be int64 [windows, tokens], got {array.dtype.name} {list(array.shape)}")
        if array.shape != input_ids.shape:
            raise InputError(f"{name} has shape {list(array.shape)}, input_ids {list(input_ids.shape)}")
    n_windows, width = input_ids.shape
    if n_windows == 0 or width == 0:
        raise InputError(f"the request holds no tokens (shape {list(input_ids.shape)})")
    if width > limits.max_position_embeddings:
        raise InputError(f"windows of {width} tokens; the model takes at most {limits.max_position_embeddings}")
    if input_ids.min() < 0 or input_ids.max() >= limits.vocab_size:
        raise InputError(f"token ids must be in [0, {limits.vocab_size}), the model's vocabulary")
    types = limits.type_vocab_size
    if types is not None and (token_type_ids.min() < 0 or token_type_ids.max() >= types):
        raise InputError(f"token types must be in [0, {types})")
    if (
        ((attention_mask != 0) & (attention_mask != 1)).any()
        or (attention_mask[:, 0] != 1).any()
        or (attention_mask[:, 1:] > attention_mask[:, :-1]).any()
    ):
        raise InputError("each window's attention must be ones followed by zeros, starting with a one")


def read_tokens(pb_utils: Any, request: Any, limits: ModelLimits) -> np.ndarray:
    """The request's ``tokens`` [W, L] (packed: ``runtime.tensors``), checked."""
    tensor = pb_utils.get_input_tensor_by_name(request, "tokens")
    if tensor is None:
        raise InputError("the request has no input 'tokens'")
    tokens = tensor.as_numpy()
    if tokens.dtype != np.int64 or tokens.ndim != 2:
        raise InputError(f"tokens must be int64 [windows, tokens], got {tokens.dtype.name} {list(tokens.shape)}")
    check_windows(*unpack_tokens(tokens), limits)
    return tokens
