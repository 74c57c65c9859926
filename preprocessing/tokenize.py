"""Questions and contexts -> doc-stride windows, built the way ``pipeline('question-answering')`` builds them.

The reference (transformers 4.57.6, fast tokenizer) encodes ``(question, context)`` with the question first,
only the context truncated to ``max_seq_len`` tokens, ``doc_stride`` tokens of overlap between windows,
and no padding. Here every question of a batch goes through one ``encode_batch`` call; the windows of each
request are then padded only to that request's longest window (not to ``max_seq_len``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from preprocessing.errors import InputError

NO_OFFSET = -1


@dataclass(frozen=True)
class WindowSettings:
    """How a question and its context become windows (the reference pipeline's defaults)."""

    max_seq_len: int = 384
    doc_stride: int = 128
    max_question_len: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.doc_stride < self.max_seq_len:
            raise ValueError(f"doc_stride ({self.doc_stride}) must be in (0, max_seq_len={self.max_seq_len})")
        # [CLS] question [SEP] context [SEP]: the context needs more room than the stride it overlaps by.
        if self.max_question_len + 3 + self.doc_stride >= self.max_seq_len:
            raise ValueError("max_question_len + doc_stride + 3 special tokens must be below max_seq_len")


@dataclass
class Windows:
    """Doc-stride windows of one or more questions, right-padded to the longest window.

    ``token_offsets`` and ``word_offsets`` hold character spans into each window's own context, and
    ``NO_OFFSET`` for every token outside the context (question, special tokens, padding). The word span
    of a token is the span of its whole word as far as the window holds it, which is what the reference
    pipeline aligns answers to.
    """

    input_ids: np.ndarray  # [W, L] int64
    attention_mask: np.ndarray  # [W, L] int64
    token_type_ids: np.ndarray  # [W, L] int64
    token_offsets: np.ndarray  # [W, L, 2] int32
    word_offsets: np.ndarray  # [W, L, 2] int32
    window_question: np.ndarray  # [W] int32: index of the question each window belongs to

    @property
    def lengths(self) -> np.ndarray:
        return self.attention_mask.sum(axis=1)

    def select(self, first_question: int, n_questions: int) -> "Windows":
        """The windows of questions ``first_question .. first_question + n_questions - 1``, renumbered from
        0 and trimmed to their own longest window."""
        rows = (self.window_question >= first_question) & (self.window_question < first_question + n_questions)
        width = int(self.lengths[rows].max()) if rows.any() else 0
        parts = {f.name: getattr(self, f.name)[rows] for f in fields(self)}
        for name in ("input_ids", "attention_mask", "token_type_ids", "token_offsets", "word_offsets"):
            parts[name] = np.ascontiguousarray(parts[name][:, :width])
        parts["window_question"] = parts["window_question"] - first_question
        return Windows(**parts)


class QATokenizer:
    """A fast (HF ``tokenizers``) tokenizer that turns (question, context) pairs into windows."""

    def __init__(self, tokenizer_file: str | Path, settings: WindowSettings = WindowSettings()):
        self.settings = settings
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer_file = str(tokenizer_file)
        self._tokenizer.enable_truncation(
            max_length=settings.max_seq_len, stride=settings.doc_stride, strategy="only_second"
        )
        self.pad_id = self._tokenizer.padding["pad_id"] if self._tokenizer.padding else 0

    @cached_property
    def _untruncated(self) -> Tokenizer:
        """A second tokenizer without truncation, for measuring questions alone (only on the error path)."""
        tokenizer = Tokenizer.from_file(self._tokenizer_file)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    def question_lengths(self, questions: Sequence[str]) -> list[int]:
        """Token counts of questions on their own (no special tokens)."""
        return [len(e.ids) for e in self._untruncated.encode_batch(list(questions), add_special_tokens=False)]

    def encode(self, questions: Sequence[str], contexts: Sequence[str]) -> Windows:
        """Windows for every (question, context) pair, in one tokenizer call.

        Raises ``InputError`` naming the first question that is too long or whose context holds no token.
        """
        if len(questions) != len(contexts):
            raise InputError(f"{len(questions)} questions but {len(contexts)} contexts; they must pair up")
        try:
            encodings = self._tokenizer.encode_batch(list(zip(questions, contexts)))
        except Exception as error:  # the tokenizer refuses a question that leaves no room for the context
            self._raise_for_long_questions(questions)
            raise InputError(f"the tokenizer rejected the input: {error}") from error

        windows = [(q, window) for q, e in enumerate(encodings) for window in (e, *e.overflowing)]
        n_windows = len(windows)
        width = max(len(w.ids) for _, w in windows)

        input_ids = np.full((n_windows, width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((n_windows, width), dtype=np.int64)
        token_type_ids = np.zeros((n_windows, width), dtype=np.int64)
        sequence_ids = np.full((n_windows, width), np.nan)
        word_ids = np.full((n_windows, width), np.nan)
        token_offsets = np.full((n_windows, width, 2), NO_OFFSET, dtype=np.int32)
        window_question = np.empty(n_windows, dtype=np.int32)
        for row, (question, window) in enumerate(windows):
            n = len(window.ids)
            input_ids[row, :n] = window.ids
            attention_mask[row, :n] = window.attention_mask
            token_type_ids[row, :n] = window.type_ids
            sequence_ids[row, :n] = np.array(window.sequence_ids, dtype=float)  # None -> nan
            word_ids[row, :n] = np.array(window.word_ids, dtype=float)
            token_offsets[row, :n] = window.offsets
            window_question[row] = question

        is_context = sequence_ids == 1
        self._check_lengths(is_context, token_type_ids, attention_mask, window_question)
        token_offsets[~is_context] = NO_OFFSET
        return Windows(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            token_offsets=token_offsets,
            word_offsets=_word_offsets(token_offsets, np.where(is_context, word_ids, np.nan)),
            window_question=window_question,
        )

    def _check_lengths(self, is_context, token_type_ids, attention_mask, window_question) -> None:
        first_windows = np.flatnonzero(np.r_[True, window_question[1:] != window_question[:-1]])
        # [CLS] question [SEP] have type 0: the question's own length is their count less two.
        question_tokens = ((token_type_ids == 0) & (attention_mask == 1))[first_windows].sum(axis=1) - 2
        limit = self.settings.max_question_len
        for q in np.flatnonzero(question_tokens > limit):
            raise InputError(f"question {q} is {question_tokens[q]} tokens long; the limit is {limit} tokens")
        context_tokens = is_context[first_windows].sum(axis=1)
        for q in np.flatnonzero(context_tokens == 0):
            raise InputError(f"context {q} holds no token the model can read")

    def _raise_for_long_questions(self, questions: Sequence[str]) -> None:
        limit = self.settings.max_question_len
        for q, n in enumerate(self.question_lengths(questions)):
            if n > limit:
                raise InputError(f"question {q} is {n} tokens long; the limit is {limit} tokens")


def _word_offsets(token_offsets: np.ndarray, word_ids: np.ndarray) -> np.ndarray:
    """Character span of each token's word within its window (``NO_OFFSET`` where the word is unknown).

    Tokens of one word are contiguous, so a word is a run of equal word ids in a row: its span runs from
    the first token's start to the last token's end.
    """
    rows, width = word_ids.shape
    flat_words = word_ids.ravel()
    run_starts = np.ones(rows * width, dtype=bool)
    same_as_previous = flat_words[1:] == flat_words[:-1]  # nan never equals nan: unknown words stand alone
    same_as_previous[width - 1 :: width] = False  # a run never crosses into the next window
    run_starts[1:] = ~same_as_previous
    run_of = np.cumsum(run_starts) - 1
    first = np.flatnonzero(run_starts)
    last = np.r_[first[1:] - 1, rows * width - 1]
    flat_offsets = token_offsets.reshape(-1, 2)
    spans = np.stack([flat_offsets[first, 0][run_of], flat_offsets[last, 1][run_of]], axis=1)
    spans[np.isnan(flat_words)] = NO_OFFSET
    return spans.reshape(rows, width, 2).astype(np.int32)
