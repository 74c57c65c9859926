"""Start/end logits of doc-stride windows -> answer spans, as ``pipeline('question-answering')`` picks them.

Per window: tokens outside the context (but the [CLS] at position 0) are masked to -10000 before a softmax
of the start and of the end logits; the null score is p_start[CLS] * p_end[CLS]; [CLS] is then zeroed; a
span (s, e) scores p_start[s] * p_end[e] for s <= e < s + max_answer_len; the best ``top_k * 2 + 10``
spans of the window (``top_k`` without word alignment) become candidates. Candidates of all windows of a
question, in window order, are merged by answer text (case-insensitive, scores added), the null answer is
added when ``handle_impossible_answer``, and the ``top_k`` best are kept.

Everything up to the candidates' character spans is vectorised over all windows of all questions; only the
merge by text (a few candidates per window) is a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from preprocessing.requests import AnswerOptions
from preprocessing.tokenize import NO_OFFSET

MASKED_LOGIT = np.float32(-10000.0)
PAD_START = -1  # start/end of the filler entries when a question has fewer than top_k answers
BAND_ELEMENTS = 1 << 22  # span scores computed at once: windows are decoded in slices of this many


@dataclass
class DecodedAnswers:
    """Answers of N questions, best first: ``[N, top_k]`` arrays, filler entries have start == end == -1."""

    text: np.ndarray  # object (str)
    score: np.ndarray  # float32
    start: np.ndarray  # int64, character offset into the question's context
    end: np.ndarray  # int64

    def rows(self, begin: int, end: int) -> DecodedAnswers:
        """The answers of questions ``begin .. end - 1``."""
        return DecodedAnswers(self.text[begin:end], self.score[begin:end], self.start[begin:end], self.end[begin:end])


def decode(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    token_offsets: np.ndarray,
    word_offsets: np.ndarray,
    window_question: np.ndarray,
    contexts: Sequence[str],
    options: AnswerOptions = AnswerOptions(),
    replayable: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> DecodedAnswers:
    """Decode ``[W, L]`` logits of the windows of ``len(contexts)`` questions (windows of a question contiguous
    and in order). ``replayable(windows, products)``: which of the windows that need the reference's replay
    (``products``: the n x n products each replays, its costly part) may have it; the others give no candidate
    (their request is refused by whoever said no)."""
    n_windows, width = start_logits.shape
    in_context = token_offsets[..., 0] != NO_OFFSET
    keep = in_context.copy()
    keep[:, 0] = True  # the reference keeps [CLS] in the softmax
    p_start = _softmax(np.where(keep, start_logits.astype(np.float32), MASKED_LOGIT))
    p_end = _softmax(np.where(keep, end_logits.astype(np.float32), MASKED_LOGIT))
    null_scores = p_start[:, 0] * p_end[:, 0]
    p_start[:, 0] = p_end[:, 0] = 0.0

    # Span (s, s + d) for d < max_answer_len: a [W, L, D] band instead of the full [W, L, L] outer product,
    # computed a slice of windows at a time so that memory stays bounded whatever max_answer_len is.
    lengths = np.arange(min(options.max_answer_len, width))
    ends = np.arange(width)[:, None] + lengths[None, :]  # [L, D]
    safe_ends = np.minimum(ends, width - 1)
    per_window = options.top_k * 2 + 10 if options.align_to_words else options.top_k
    k = min(per_window, width * lengths.size)
    scores = np.zeros((n_windows, k), np.float32)
    starts = np.zeros((n_windows, k), np.int64)
    span_ends = np.zeros((n_windows, k), np.int64)
    valid = np.ones((n_windows, k), bool)
    positive = np.zeros(n_windows, np.int64)
    step = max(1, BAND_ELEMENTS // (width * lengths.size))
    for begin in range(0, n_windows, step):
        rows = slice(begin, begin + step)
        allowed = (ends < width)[None] & in_context[rows, :, None] & in_context[rows][:, safe_ends]
        band = np.where(allowed, p_start[rows, :, None] * p_end[rows][:, safe_ends], np.float32(0.0))
        flat = band.reshape(band.shape[0], -1)
        top = np.argpartition(-flat, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(flat, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        top, scores[rows] = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
        starts[rows], span_lengths = np.divmod(top, lengths.size)
        span_ends[rows] = starts[rows] + span_lengths
        positive[rows] = (flat > 0).sum(axis=1)
    # A window with fewer real spans than it asks for: the reference fills up with zero-score spans taken
    # from its full outer product; replay its exact selection there (short contexts, or probabilities that
    # underflow to 0). Which zeros it takes is its argpartition's choice over all n x n products, so the replay
    # needs them: n^2 for a window of n <= L tokens, the product masked by one [L, L] band cut to each window
    # (the decoder step takes windows of at most the tokenizer's max_seq_len tokens, which bounds it).
    replayed = np.flatnonzero(positive < per_window)
    if replayed.size and replayable is not None:
        last_kept = width - 1 - np.argmax(keep[replayed, ::-1], axis=1)
        products = np.minimum(last_kept + 2, width) ** 2
        allowed = np.asarray(replayable(replayed, products), dtype=bool)
        refused = replayed[~allowed]
        valid[refused] = False
        starts[refused] = span_ends[refused] = 0  # unused; any in-bounds token (a band's top may lie past the end)
        replayed = replayed[allowed]
    if replayed.size:
        offset = np.arange(width)[None, :] - np.arange(width)[:, None]
        band_mask = ((offset >= 0) & (offset < options.max_answer_len)).astype(np.float32)
    for window in replayed:
        found = reference_spans(p_start[window], p_end[window], keep[window], per_window, band_mask)
        n = len(found[0])
        scores[window, :n], starts[window, :n], span_ends[window, :n] = found
        valid[window, n:] = False
        starts[window, n:] = span_ends[window, n:] = 0  # unused; any in-bounds token

    token_spans = token_offsets.copy()
    token_spans[:, 0] = 0  # [CLS] spans 0..0 in the reference's offsets
    window_index = np.arange(n_windows)[:, None]
    char_start = token_spans[window_index, starts, 0]
    char_end = token_spans[window_index, span_ends, 1]
    if options.align_to_words:
        word_start = word_offsets[window_index, starts, 0]
        word_end = word_offsets[window_index, span_ends, 1]
        # The reference falls back to token offsets for both ends when either token has no word.
        has_words = (word_start != NO_OFFSET) & (word_end != NO_OFFSET)
        char_start, char_end = np.where(has_words, word_start, char_start), np.where(has_words, word_end, char_end)

    min_null = np.full(len(contexts), 1_000_000.0)
    np.minimum.at(min_null, window_question, null_scores)
    return _merge(contexts, window_question, scores, char_start, char_end, valid, min_null, options)


def reference_spans(p_start, p_end, keep, k, band_mask):
    """The reference's ``decode_spans`` on one window, unpadded: [CLS] question [SEP] context [SEP].
    ``band_mask``: 1 where 0 <= end - start < max_answer_len, else 0 (its ``tril(triu(...))``, same values:
    the products are finite and non-negative)."""
    n = min(int(np.flatnonzero(keep)[-1]) + 2, len(p_start))
    scores = np.outer(p_start[:n], p_end[:n]) * band_mask[:n, :n]
    flat = scores.ravel()
    if k == 1:
        top = np.array([np.argmax(flat)])
    elif flat.size <= k:  # the reference raises for flat.size == k (argpartition's kth out of bounds)
        top = np.argsort(-flat)
    else:
        top = np.argpartition(-flat, k)[:k]
        top = top[np.argsort(-flat[top])]
    starts, ends = np.unravel_index(top, scores.shape)
    wanted = keep[starts] & keep[ends]
    return flat[top][wanted], starts[wanted], ends[wanted]


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _merge(contexts, window_question, scores, char_start, char_end, valid, min_null, options) -> DecodedAnswers:
    """Candidates of all windows of a question, in window order then score order, merged by answer text
    (case-insensitive, scores added) as the reference does; the ``top_k`` best per question."""
    n_questions, top_k = len(contexts), options.top_k
    text = np.full((n_questions, top_k), "", dtype=object)
    score = np.zeros((n_questions, top_k), dtype=np.float32)
    start = np.full((n_questions, top_k), PAD_START, dtype=np.int64)
    end = np.full((n_questions, top_k), PAD_START, dtype=np.int64)
    answers: list[dict[str, list]] = [{} for _ in range(n_questions)]  # lower-cased text -> [score, start, end, text]
    for q, row_scores, row_starts, row_ends, row_valid in zip(
        window_question.tolist(), scores.tolist(), char_start.tolist(), char_end.tolist(), valid.tolist()
    ):
        context, merged = contexts[q], answers[q]
        for span_score, s, e, ok in zip(row_scores, row_starts, row_ends, row_valid):
            if not ok:
                break
            found = context[s:e]
            key = found.lower()
            entry = merged.get(key)
            if entry is None:
                merged[key] = [span_score, s, e, found]
            else:
                entry[0] += span_score
    for q, merged in enumerate(answers):
        ranked = list(merged.values())
        if options.handle_impossible_answer:
            ranked.append([float(min_null[q]), 0, 0, ""])
        ranked.sort(key=lambda entry: entry[0], reverse=True)
        for rank, (entry_score, s, e, found) in enumerate(ranked[:top_k]):
            text[q, rank], score[q, rank], start[q, rank], end[q, rank] = found, entry_score, s, e
    return DecodedAnswers(text=text, score=score, start=start, end=end)
