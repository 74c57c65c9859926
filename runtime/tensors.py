"""The names (and numpy dtypes) of the tensors the steps pass each other, as the configs declare them
(tests/unit/test_model_repository.py holds the two together), and how what travels together is packed. The
ensemble's own inputs and outputs, the clients' contract, are in ``client._protocol``.

Each tensor between steps costs every request a shared-memory hand-off in Triton and in two stub processes, so
what travels together is one tensor:

- ``tokens`` [W, L] int64: a window's input ids, token types and attention mask in one integer per token,
  ``id + TYPE_BIT * token_type + ATTENTION_BIT * attention`` (padding: the pad id alone). Exact for any text
  (a literal "[SEP]" or "[PAD]" in a question stays what the tokenizer made of it) and within int32;
- ``offsets`` [W, L, 4] int32: each token's character span in its context, then its word's;
- ``window_context`` [W, 1] bytes: the question's context on its first window, empty on the others (a context
  holds at least one token, so the non-empty ones number the questions: ``window_questions``);
- ``logits`` [W, L, 2] float32: start and end logits.
"""

import numpy as np

# tokenizer -> encoder, decoder
WINDOW_TENSORS = {"tokens": np.int64, "offsets": np.int32, "window_context": np.object_}
# encoder
MODEL_INPUTS = ("tokens",)
MODEL_OUTPUTS = ("logits",)
# decoder: (name, dtype, rank as the Python backend hands it over)
DECODER_INPUTS = (("logits", np.float32, 3), ("offsets", np.int32, 3), ("window_context", np.object_, 2))
ANSWER_OUTPUTS = ("answer", "score", "start", "end")

# the exported ONNX graph's inputs and outputs: the standard names, which ONNX Runtime's transformer fusions
# recognise
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
GRAPH_OUTPUTS = ("start_logits", "end_logits")

TYPE_BIT = 1 << 24  # above any vocabulary's ids
ATTENTION_BIT = 1 << 25


def pack_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
    """``tokens`` from the three ``[W, L]`` model inputs (ids below ``TYPE_BIT``, types 0 or 1, mask 0 or 1)."""
    return input_ids + TYPE_BIT * token_type_ids + ATTENTION_BIT * attention_mask


def unpack_tokens(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, attention_mask, token_type_ids) of ``tokens`` (numpy, or torch: the same operators)."""
    return tokens % TYPE_BIT, tokens // ATTENTION_BIT, tokens // TYPE_BIT % 2


def window_questions(window_context: np.ndarray) -> np.ndarray:
    """[W] int32: the question of each window, numbered from 0, from ``window_context`` [W, 1] (a question's
    context on its first window, empty after)."""
    first = np.fromiter((len(c) > 0 for c in window_context[:, 0]), bool, len(window_context))
    return (np.cumsum(first) - 1).astype(np.int32)


def window_tensors(windows, contexts: np.ndarray) -> dict[str, np.ndarray]:
    """The tokenizer step's outputs for one request: its ``preprocessing.Windows`` and ``contexts`` [N] (its
    questions' contexts, as the request's bytes)."""
    questions = windows.window_question
    first = np.concatenate(([True], questions[1:] != questions[:-1]))
    return {
        "tokens": pack_tokens(windows.input_ids, windows.attention_mask, windows.token_type_ids),
        "offsets": np.concatenate((windows.token_offsets, windows.word_offsets), axis=2),
        "window_context": np.where(first, contexts[questions], b"").astype(object)[:, None],
    }
