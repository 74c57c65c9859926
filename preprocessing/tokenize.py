"""Questions and contexts -> doc-stride windows, built the way ``pipeline('question-answering')`` builds them.

The reference (transformers 4.57.6, fast tokenizer) encodes ``(question, context)`` with the question first,
only the context truncated to ``max_seq_len`` tokens, ``doc_stride`` tokens of overlap between windows,
and no padding. Its fast-tokenizer path ignores ``max_question_len``: a long question only shrinks the room
left for the context in each window. It cannot window a pair whose question leaves the context no more room
than ``doc_stride`` while the context does not fit in that room (the tokenizer refuses, or panics); such a
pair is refused here before it reaches the tokenizer.

Here many pairs go through one ``encode_batch`` call; the windows are padded to the longest window of the
call (``Windows.select`` trims each request's share to its own longest window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from preprocessing.arrays import stack_padded
from preprocessing.errors import InputError

NO_OFFSET = -1
# Upper bound on the tokens one character of text can become: BERT's normalizer decomposes a Hangul syllable
# into up to three jamo (measured: every code point alone gives at most 3 tokens), and every WordPiece token
# covers at least one normalised character. Used to bound work from character counts before tokenizing.
MAX_TOKENS_PER_CHAR = 3


@dataclass(frozen=True)
class WindowSettings:
    """How a question and its context become windows (the reference pipeline's defaults)."""

    max_seq_len: int = 384
    doc_stride: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.doc_stride < self.max_seq_len:
            raise ValueError(f"doc_stride ({self.doc_stride}) must be in (0, max_seq_len={self.max_seq_len})")


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

    def select(self, first_question: int, n_questions: int) -> Windows:
        """The windows of questions ``first_question .. first_question + n_questions - 1``, renumbered from
        0 and trimmed to their own longest window."""
        begin, end = np.searchsorted(self.window_question, [first_question, first_question + n_questions])
        width = int(self.attention_mask[begin:end, :].sum(axis=1).max()) if end > begin else 0
        parts = {
            name: np.ascontiguousarray(getattr(self, name)[begin:end, :width])
            for name in ("input_ids", "attention_mask", "token_type_ids", "token_offsets", "word_offsets")
        }
        return Windows(**parts, window_question=self.window_question[begin:end] - first_question)

    @classmethod
    def concatenate(cls, parts: Sequence[Windows]) -> Windows:
        """The windows of several parts in order, questions numbered on, padded to the longest window."""
        first = np.cumsum([0] + [int(p.window_question.max()) + 1 for p in parts[:-1]])
        fills = {
            "input_ids": 0,
            "attention_mask": 0,
            "token_type_ids": 0,
            "token_offsets": NO_OFFSET,
            "word_offsets": NO_OFFSET,
        }
        joined = {name: stack_padded([getattr(p, name) for p in parts], fill) for name, fill in fills.items()}
        return cls(**joined, window_question=np.concatenate([p.window_question + f for p, f in zip(parts, first)]))


def windows_of_pair(context_tokens: np.ndarray, room: np.ndarray, doc_stride: int) -> np.ndarray:
    """Windows the tokenizer makes for contexts of ``context_tokens`` tokens when ``room`` tokens of each
    window are left for the context (``room > doc_stride`` wherever the context does not fit)."""
    step = np.maximum(room - doc_stride, 1)
    return 1 + np.maximum(0, -(-(context_tokens - room) // step))


class QATokenizer:
    """A fast (HF ``tokenizers``) tokenizer that turns (question, context) pairs into windows."""

    def __init__(self, tokenizer_file: str | Path, settings: WindowSettings = WindowSettings()):
        self.settings = settings
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(
            max_length=settings.max_seq_len, stride=settings.doc_stride, strategy="only_second"
        )
        self._counter = Tokenizer.from_file(str(tokenizer_file))  # for token counts of texts on their own
        self._counter.no_padding()
        self._counter.no_truncation()
        self.pad_id = self._tokenizer.padding["pad_id"] if self._tokenizer.padding else 0
        self.special_tokens = self._tokenizer.num_special_tokens_to_add(is_pair=True)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts of texts on their own (no special tokens), from one tokenizer call."""
        encodings = self._counter.encode_batch(list(texts), add_special_tokens=False)
        return np.array([len(e) for e in encodings], dtype=np.int64)

    def plan(self, questions: Sequence[str], contexts: Sequence[str], max_windows: int) -> np.ndarray:
        """Upper bounds on the windows each pair of one request makes (see ``plan_requests``); raises its
        ``InputError``."""
        planned = self.plan_requests([(questions, contexts)], max_windows)[0]
        if isinstance(planned, InputError):
            raise planned
        return planned

    def plan_requests(
        self, requests: Sequence[tuple[Sequence[str], Sequence[str]]], max_windows: int
    ) -> list[np.ndarray | InputError]:
        """Per request, upper bounds on the windows each of its pairs makes, found without encoding the pairs
        (exact token counts only of texts long enough to matter, in one tokenizer call for all requests); or
        the ``InputError`` naming the first pair the reference pipeline cannot window, or saying that the
        request surely makes more than ``max_windows`` windows."""
        settings = self.settings
        sizes = [len(questions) for questions, _ in requests]
        questions = [q for qs, _ in requests for q in qs]
        contexts = [c for _, cs in requests for c in cs]
        question_tokens = np.fromiter(map(len, questions), np.int64, len(questions)) * MAX_TOKENS_PER_CHAR
        context_tokens = np.fromiter(map(len, contexts), np.int64, len(contexts)) * MAX_TOKENS_PER_CHAR
        room_for_context = settings.max_seq_len - self.special_tokens
        # exact question lengths where the bound alone could leave the context no more room than the stride
        counted = room_for_context - question_tokens <= settings.doc_stride
        if counted.any():
            question_tokens[counted] = self.token_counts([questions[i] for i in np.flatnonzero(counted)])
        room = room_for_context - question_tokens
        # exact lengths of both texts where the question leaves little room, or the bound alone is over the limit
        unsure = (room <= settings.doc_stride) & (context_tokens > room) | (
            windows_of_pair(context_tokens, room, settings.doc_stride) > max_windows
        )
        if unsure.any():
            recount = unsure & ~counted
            if recount.any():
                question_tokens[recount] = self.token_counts([questions[i] for i in np.flatnonzero(recount)])
                room = room_for_context - question_tokens
            context_tokens[unsure] = self.token_counts([contexts[i] for i in np.flatnonzero(unsure)])
        windows = windows_of_pair(context_tokens, room, settings.doc_stride)
        no_room = (context_tokens > room) & (room <= settings.doc_stride)
        results: list[np.ndarray | InputError] = []
        for begin, end in zip(np.cumsum([0] + sizes[:-1]).tolist(), np.cumsum(sizes).tolist()):
            results.append(windows[begin:end])
            if not unsure[begin:end].any():
                continue
            for q in np.flatnonzero(no_room[begin:end])[:1]:
                i = begin + q
                results[-1] = InputError(
                    f"question {q} is {question_tokens[i]} tokens long: it leaves {max(room[i], 0)} tokens of a "
                    f"{settings.max_seq_len}-token window for the context, which must exceed the doc_stride of "
                    f"{settings.doc_stride} when the context ({context_tokens[i]} tokens) does not fit in one "
                    f"window"
                )
            exact = windows[begin:end][unsure[begin:end]].sum()
            if exact > max_windows and not isinstance(results[-1], InputError):
                results[-1] = InputError(
                    f"the contexts make at least {exact} windows of {settings.max_seq_len} "
                    f"tokens; the limit is {max_windows} per request"
                )
        return results

    def encode(self, questions: Sequence[str], contexts: Sequence[str]) -> Windows:
        """Windows for every (question, context) pair, in one tokenizer call. Pairs are expected to have
        passed ``plan``.

        Raises ``InputError`` naming the first context that holds no token.
        """
        if len(questions) != len(contexts):
            raise InputError(f"{len(questions)} questions but {len(contexts)} contexts; they must pair up")
        try:
            encodings = self._tokenizer.encode_batch(list(zip(questions, contexts)))
        except Exception as error:  # plan() keeps pairs the tokenizer refuses from getting here
            raise InputError(f"the tokenizer rejected the input: {error}") from error

        windows = [window for e in encodings for window in (e, *e.overflowing)]
        per_question = np.array([1 + len(e.overflowing) for e in encodings])
        lengths = np.array([len(w) for w in windows])
        n_windows, width, total = len(windows), int(lengths.max()), int(lengths.sum())
        filled = np.arange(width) < lengths[:, None]  # [W, L]: the real (unpadded) tokens, row by row

        def flat(attribute: str, dtype, per_token: int = 1) -> np.ndarray:
            values = chain.from_iterable(getattr(w, attribute) for w in windows)
            if per_token > 1:
                values = chain.from_iterable(values)
            return np.fromiter(values, dtype, total * per_token)

        input_ids = np.full((n_windows, width), self.pad_id, dtype=np.int64)
        input_ids[filled] = flat("ids", np.int64)
        token_type_ids = np.zeros((n_windows, width), dtype=np.int64)
        token_type_ids[filled] = flat("type_ids", np.int64)
        # word and sequence ids are None for special tokens: NaN in a float array
        word_ids = np.full((n_windows, width), np.nan)
        word_ids[filled] = np.array(list(chain.from_iterable(w.word_ids for w in windows)), dtype=float)
        sequence_ids = np.full((n_windows, width), np.nan)
        sequence_ids[filled] = np.array(list(chain.from_iterable(w.sequence_ids for w in windows)), dtype=float)
        is_context = sequence_ids == 1
        token_offsets = np.full((n_windows, width, 2), NO_OFFSET, dtype=np.int32)
        token_offsets[filled] = flat("offsets", np.int32, per_token=2).reshape(total, 2)
        token_offsets[~is_context] = NO_OFFSET

        window_question = np.repeat(np.arange(len(encodings), dtype=np.int32), per_question)
        first_windows = np.cumsum(per_question) - per_question
        for q in np.flatnonzero(~is_context[first_windows].any(axis=1)):
            raise InputError(f"context {q} holds no token the model can read")
        return Windows(
            input_ids=input_ids,
            attention_mask=filled.astype(np.int64),
            token_type_ids=token_type_ids,
            token_offsets=token_offsets,
            word_offsets=_word_offsets(token_offsets, np.where(is_context, word_ids, np.nan)),
            window_question=window_question,
        )


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
