"""Questions and contexts -> doc-stride windows, built the way ``pipeline('question-answering')`` builds them.

The reference (transformers 4.57.6, fast tokenizer) encodes ``(question, context)`` with the question first,
only the context truncated to ``max_seq_len`` tokens, ``doc_stride`` tokens of overlap between windows,
and no padding. Its fast-tokenizer path ignores ``max_question_len``: a long question only shrinks the room
left for the context in each window. It cannot window a pair whose question leaves the context no more room
than ``doc_stride`` while the context does not fit in that room (the tokenizer refuses, or panics); such a
pair is refused here before it reaches the tokenizer.

Here the texts of many pairs go through one ``encode_batch`` call, each encoded once on its own, and the
windows are cut from their tokens in arrays (``QATokenizer.encode``; a test holds them equal to the library's
own truncation); they are padded to the longest window of the call (``Windows.select`` trims each request's
share to its own longest window).
"""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from preprocessing.arrays import stack_padded
from preprocessing.errors import InputError
from preprocessing.outcomes import Outcome, Refused
from preprocessing.requests import required_integers

NO_OFFSET = -1
NO_WORD = -1  # the word id of a token of no word (the library's None)
# Upper bound on the tokens one character of text can become: BERT's normalizer decomposes a Hangul syllable
# into up to three jamo (measured: every code point alone gives at most 3 tokens), and every WordPiece token
# covers at least one normalised character. Used to bound work from character counts before tokenizing.
MAX_TOKENS_PER_CHAR = 3
# Texts longer than this are counted in pieces of about this many characters, cut after a space, so that a count
# stops once a text is surely over a limit (QATokenizer.token_counts): a 1,000,000-character context over
# max_windows is refused after counting about as much of it as the limit takes, plus one piece
COUNT_PIECE_CHARS = 100_000


@dataclass(frozen=True)
class WindowSettings:
    """How a question and its context become windows: the tokenizer config's ``max_seq_len`` and ``doc_stride``
    (the reference pipeline's 384 and 128 there; no defaults here)."""

    max_seq_len: int
    doc_stride: int

    @classmethod
    def from_config(cls, parameters: Mapping[str, str]) -> WindowSettings:
        """From the tokenizer config's parameters; a missing one raises ``ValueError`` naming it."""
        return cls(**required_integers(parameters, ("max_seq_len", "doc_stride"), "tokenizer"))

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
        if len(parts) == 1:
            return parts[0]
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


def leaves_no_room(context_tokens: np.ndarray, room: np.ndarray, doc_stride: int) -> np.ndarray:
    """Where a pair cannot be windowed: its context does not fit in the ``room`` its question leaves, and that
    room is not more than the stride (the reference's tokenizer refuses, or panics)."""
    return (context_tokens > room) & (room <= doc_stride)


def windows_of_pair(context_tokens: np.ndarray, room: np.ndarray, doc_stride: int) -> np.ndarray:
    """Windows the tokenizer makes for contexts of ``context_tokens`` tokens when ``room`` tokens of each
    window are left for the context (``room > doc_stride`` wherever the context does not fit)."""
    step = np.maximum(room - doc_stride, 1)
    return 1 + np.maximum(0, -(-(context_tokens - room) // step))


@dataclass(frozen=True)
class ContextTokens:
    """A context's tokens on their own (no special tokens): ids, character spans, word ids (``NO_WORD``)."""

    ids: np.ndarray  # [T] int32
    offsets: np.ndarray  # [T, 2] int32
    words: np.ndarray  # [T] int32 (16 bytes a token in all)

    @classmethod
    def of(cls, encoding) -> ContextTokens:
        n = len(encoding.ids)
        return cls(
            ids=np.array(encoding.ids, dtype=np.int32),
            offsets=np.array(encoding.offsets, dtype=np.int32).reshape(n, 2),
            words=np.array([NO_WORD if w is None else w for w in encoding.word_ids], dtype=np.int32),
        )

    @property
    def tokens(self) -> int:
        return len(self.ids)


# what one entry of the cache holds beyond its key's characters and its arrays: the dict's node, the dataclass,
# three array headers (measured with tracemalloc: ~570 bytes; rounded up)
ENTRY_OVERHEAD_BYTES = 1024
# more characters than this per token is no document (a megabyte of control characters around one emoji
# normalises to a token or two): such a context is encoded, never kept
MAX_CACHED_CHARS_PER_TOKEN = 100


class ContextCache:
    """The tokens of recently seen contexts, keyed by the context's text, least recently used dropped first once
    the entries hold more than ``max_bytes`` (0: nothing kept). An entry's bytes are what it holds: its key as
    Python stores it (1, 2 or 4 bytes a character, by the widest), its arrays, and ``ENTRY_OVERHEAD_BYTES``.
    "Many questions about one document" then encodes the document once, across requests as within one."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._entries: OrderedDict[str, tuple[ContextTokens, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, context: str) -> ContextTokens | None:
        found = self._entries.get(context)
        if found is None:
            return None
        self._entries.move_to_end(context)
        return found[0]

    @staticmethod
    def entry_bytes(context: str, tokens: ContextTokens) -> int:
        arrays = tokens.ids.nbytes + tokens.offsets.nbytes + tokens.words.nbytes
        return sys.getsizeof(context) + arrays + ENTRY_OVERHEAD_BYTES

    def put(self, context: str, tokens: ContextTokens) -> None:
        size = self.entry_bytes(context, tokens)
        if (
            size > self.max_bytes
            or context in self._entries
            or len(context) > MAX_CACHED_CHARS_PER_TOKEN * max(tokens.tokens, 1)
        ):
            return
        self._entries[context] = (tokens, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped


@dataclass(frozen=True)
class PairTemplate:
    """How the tokenizer lays out a (question, context) pair, read off its own pair encoding: the special tokens
    (id, token type) before the question, between the two and after the context, and the texts' token types.
    BERT, ELECTRA, DistilBERT: ``[CLS] q [SEP] c [SEP]``; RoBERTa: ``<s> q </s></s> c </s>``."""

    prefix: tuple[tuple[int, int], ...]
    middle: tuple[tuple[int, int], ...]
    suffix: tuple[tuple[int, int], ...]
    question_type: int
    context_type: int

    @property
    def special_tokens(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def of(cls, tokenizer: Tokenizer, name: object = "the tokenizer") -> PairTemplate:
        """Read off a probe pair; a layout other than specials, question, specials, context, specials (each text
        of one token type) raises ``ValueError``."""
        probe = tokenizer.encode("a", "b")
        sequences = probe.sequence_ids
        runs = [(key, [i for i, s in enumerate(sequences) if s == key]) for key in (0, 1)]
        (_, question), (_, context) = runs
        special = [i for i, s in enumerate(sequences) if s is None]
        layout_ok = (
            question
            and context
            and question == list(range(question[0], question[-1] + 1))
            and context == list(range(context[0], context[-1] + 1))
            and question[-1] < context[0]
            and len(special) == tokenizer.num_special_tokens_to_add(is_pair=True)
        )
        types = [probe.type_ids[i] for i in question], [probe.type_ids[i] for i in context]
        if not layout_ok or len(set(types[0])) != 1 or len(set(types[1])) != 1:
            raise ValueError(f"{name}: not a specials-question-specials-context-specials pair ({probe.tokens})")

        def part(positions: list[int]) -> tuple[tuple[int, int], ...]:
            return tuple((probe.ids[i], probe.type_ids[i]) for i in positions)

        return cls(
            prefix=part([i for i in special if i < question[0]]),
            middle=part([i for i in special if question[-1] < i < context[0]]),
            suffix=part([i for i in special if i > context[-1]]),
            question_type=types[0][0],
            context_type=types[1][0],
        )


class QATokenizer:
    """A fast (HF ``tokenizers``) tokenizer that turns (question, context) pairs into windows."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        settings: WindowSettings,
        parallel: bool = True,
        cache_bytes: int = 0,
    ):
        """``parallel``: whether the tokenizer library encodes a batch on all cores (its thread pool, for the
        whole process); off, each call encodes on the calling thread alone. ``cache_bytes``: the memory the
        context encodings kept across calls may hold (``ContextCache``; 0: none)."""
        self.cache = ContextCache(cache_bytes)
        # the library reads this before its first parallel call, once per process
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if parallel else "false"
        self.settings = settings
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        padding = self._tokenizer.padding
        self.pad_id = padding["pad_id"] if padding else 0
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()  # texts are encoded whole, windows cut here (encode)
        self.template = PairTemplate.of(self._tokenizer, tokenizer_file)
        self.special_tokens = self.template.special_tokens
        # BERT's normaliser and pre-tokenizer split words at spaces before WordPiece: a text's tokens are then
        # those of its pieces cut after a space, and a long text can be counted piece by piece (token_counts)
        config = json.loads(self._tokenizer.to_str())
        self._counts_add_up = (config.get("normalizer") or {}).get("type") == "BertNormalizer" and (
            config.get("pre_tokenizer") or {}
        ).get("type") == "BertPreTokenizer"

    def token_counts(self, texts: Sequence[str], limits: Sequence[int] | None = None) -> np.ndarray:
        """Token counts of texts on their own (no special tokens), the short ones from one tokenizer call.

        With ``limits`` (one per text), a text longer than ``COUNT_PIECE_CHARS`` is counted in pieces cut after
        a space (where the tokenizer's words split at spaces), stopping once its count exceeds its limit: such
        a count is of a prefix — below the text's, still over the limit."""
        texts = list(texts)
        counts = np.zeros(len(texts), dtype=np.int64)
        pieced = [i for i, text in enumerate(texts) if limits is not None and self._pieced(text)]
        whole = sorted(set(range(len(texts))) - set(pieced))
        if whole:
            counts[whole] = self._count([texts[i] for i in whole])
        for i in pieced:
            for piece in _pieces(texts[i], COUNT_PIECE_CHARS):
                counts[i] += self._count([piece])[0]
                if counts[i] > limits[i]:  # type: ignore[index]
                    break
        return counts

    def _pieced(self, text: str) -> bool:
        """Whether ``token_counts`` with a limit counts ``text`` in pieces (and may stop early)."""
        return self._counts_add_up and len(text) > COUNT_PIECE_CHARS

    def _count(self, texts: list[str]) -> list[int]:
        # the ids alone: without offsets the library encodes about twice as fast (long contexts are counted)
        return [len(e) for e in _library(self._tokenizer.encode_batch_fast, texts, add_special_tokens=False)]

    def plan(self, questions: Sequence[str], contexts: Sequence[str], max_windows: int) -> np.ndarray:
        """Upper bounds on the windows each pair of one request makes (see ``plan_requests``); raises its
        ``InputError``."""
        planned = self.plan_requests([(questions, contexts)], max_windows)[0]
        if isinstance(planned, Refused):
            raise planned.error
        return planned

    def counting_chars(self, requests: Sequence[tuple[Sequence[str], Sequence[str]]], max_windows: int) -> list[int]:
        """Per request, the characters ``plan_requests`` may count exactly — what planning it costs, at most:
        the texts whose character bounds alone do not settle its plan (found from character counts alone)."""
        sizes, questions, contexts, question_tokens, context_tokens = self._bounds(requests)
        room = self.settings.max_seq_len - self.special_tokens - question_tokens
        unsure = self._unsure(context_tokens, room, max_windows)
        question_chars, context_chars = question_tokens // MAX_TOKENS_PER_CHAR, context_tokens // MAX_TOKENS_PER_CHAR
        chars = np.where((room <= self.settings.doc_stride) | unsure, question_chars, 0)
        chars += np.where(unsure, context_chars, 0)
        return [int(chars[begin:end].sum()) for begin, end in _spans(sizes)]

    def _bounds(self, requests: Sequence[tuple[Sequence[str], Sequence[str]]]):
        """(questions per request, all questions, all contexts, and upper bounds on their tokens)."""
        sizes = [len(questions) for questions, _ in requests]
        questions = [q for qs, _ in requests for q in qs]
        contexts = [c for _, cs in requests for c in cs]
        question_tokens = np.fromiter(map(len, questions), np.int64, len(questions)) * MAX_TOKENS_PER_CHAR
        context_tokens = np.fromiter(map(len, contexts), np.int64, len(contexts)) * MAX_TOKENS_PER_CHAR
        return sizes, questions, contexts, question_tokens, context_tokens

    def _unsure(self, context_tokens: np.ndarray, room: np.ndarray, max_windows: int) -> np.ndarray:
        """Pairs whose (bounded) tokens leave the question little room, or make more than ``max_windows``."""
        stride = self.settings.doc_stride
        over = windows_of_pair(context_tokens, room, stride) > max_windows
        return (room <= stride) & (context_tokens > room) | over

    def plan_requests(
        self, requests: Sequence[tuple[Sequence[str], Sequence[str]]], max_windows: int
    ) -> list[Outcome[np.ndarray]]:
        """Per request, upper bounds on the windows each of its pairs makes, found without encoding the pairs
        (exact token counts only of texts long enough to matter, in one tokenizer call for all requests, a long
        context's stopped once it is surely over the limit); or ``Refused`` with the ``InputError`` naming the
        first pair the reference pipeline cannot window, or saying that the request surely makes more than
        ``max_windows`` windows."""
        settings = self.settings
        sizes, questions, contexts, question_tokens, context_tokens = self._bounds(requests)
        room_for_context = settings.max_seq_len - self.special_tokens
        # exact question lengths where the bound alone could leave the context no more room than the stride
        counted = room_for_context - question_tokens <= settings.doc_stride
        if counted.any():
            question_tokens[counted] = self.token_counts([questions[i] for i in np.flatnonzero(counted)])
        room = room_for_context - question_tokens
        # exact lengths of both texts where the question leaves little room, or the bound alone is over the limit
        unsure = self._unsure(context_tokens, room, max_windows)
        stopped = np.zeros(len(contexts), dtype=bool)  # counts of a prefix, over the limit
        if unsure.any():
            recount = unsure & ~counted
            if recount.any():
                question_tokens[recount] = self.token_counts([questions[i] for i in np.flatnonzero(recount)])
                room = room_for_context - question_tokens
            # a context is surely refused past `room` tokens when that leaves no room, else past max_windows windows
            step = np.maximum(room - settings.doc_stride, 1)
            limits = np.where(room <= settings.doc_stride, room, room + (max_windows - 1) * step)
            which = np.flatnonzero(unsure)
            context_tokens[which] = self.token_counts([contexts[i] for i in which], limits[which].tolist())
            stopped[which] = [self._pieced(contexts[i]) for i in which]
            stopped &= context_tokens > limits
        windows = windows_of_pair(context_tokens, room, settings.doc_stride)
        no_room = leaves_no_room(context_tokens, room, settings.doc_stride)
        results: list[Outcome[np.ndarray]] = []
        for begin, end in _spans(sizes):
            results.append(windows[begin:end])
            if not unsure[begin:end].any():
                continue
            for q in np.flatnonzero(no_room[begin:end])[:1]:
                i = begin + q
                results[-1] = Refused(
                    InputError(
                        f"question {q} is {question_tokens[i]} tokens long: it leaves {max(room[i], 0)} tokens of "
                        f"a {settings.max_seq_len}-token window for the context, which must exceed the doc_stride "
                        f"of {settings.doc_stride} when the context ({'at least ' if stopped[i] else ''}"
                        f"{context_tokens[i]} tokens) does not fit in one window"
                    )
                )
            exact = windows[begin:end][unsure[begin:end]].sum()
            if exact > max_windows and not isinstance(results[-1], Refused):
                results[-1] = Refused(
                    InputError(
                        f"the contexts make at least {exact} windows of {settings.max_seq_len} "
                        f"tokens; the limit is {max_windows} per request"
                    )
                )
        return results

    def _encode_texts(
        self, questions: Sequence[str], contexts: list[str]
    ) -> tuple[list[list[int]], list[ContextTokens]]:
        """(the ids of each question, the tokens of each context), from one tokenizer call for the questions and
        the contexts not in the cache."""
        found = [self.cache.get(c) for c in contexts]
        missing = [c for c, tokens in zip(contexts, found) if tokens is None]
        encodings = _library(self._tokenizer.encode_batch, [*questions, *missing], add_special_tokens=False)
        new = iter(encodings[len(questions) :])
        for i, tokens in enumerate(found):
            if tokens is None:
                found[i] = tokens = ContextTokens.of(next(new))
                self.cache.put(contexts[i], tokens)
        return [e.ids for e in encodings[: len(questions)]], found  # type: ignore[return-value]

    def encode(self, questions: Sequence[str], contexts: Sequence[str]) -> Windows:
        """Windows for every (question, context) pair, from one tokenizer call. Pairs are expected to have
        passed ``plan``.

        Each text is encoded once, on its own; the windows are cut from the context's tokens here, exactly as
        the tokenizer's ``only_second`` truncation with a stride cuts them (``[CLS] question [SEP] context
        slice [SEP]``, slices starting every ``room - doc_stride`` tokens, the last one ending at the context's
        end) — what the library does per window in objects, done once in arrays (long contexts encode
        faster: BENCHMARKS.md).

        Raises ``InputError`` naming the first context that holds no token.
        """
        if len(questions) != len(contexts):
            raise InputError(f"{len(questions)} questions but {len(contexts)} contexts; they must pair up")
        n = len(questions)
        distinct = list(dict.fromkeys(contexts))  # each context encoded once, however many questions it has
        context_of = np.fromiter(map({c: i for i, c in enumerate(distinct)}.__getitem__, contexts), np.int64, n)
        question_ids, encoded = self._encode_texts(questions, distinct)
        question_len = np.fromiter(map(len, question_ids), np.int64, n)
        distinct_len = np.fromiter((len(e.ids) for e in encoded), np.int64, len(encoded))
        context_len = distinct_len[context_of]
        for q in np.flatnonzero(context_len == 0)[:1]:
            raise InputError(f"context {q} holds no token the model can read")
        settings = self.settings
        room = settings.max_seq_len - self.special_tokens - question_len
        for q in np.flatnonzero(leaves_no_room(context_len, room, settings.doc_stride))[:1]:
            raise InputError(
                f"question {q} leaves {max(room[q], 0)} tokens of a window for its context: not more than the "
                f"doc_stride of {settings.doc_stride}"
            )

        # windows: their question, their slice [begin, end) of its context's tokens
        per_question = windows_of_pair(context_len, room, settings.doc_stride)
        window_question = np.repeat(np.arange(n, dtype=np.int32), per_question)
        first_window = np.cumsum(per_question) - per_question
        begin = (np.arange(len(window_question)) - first_window[window_question]) * np.maximum(
            room - settings.doc_stride, 1
        )[window_question]
        end = np.minimum(begin + room[window_question], context_len[window_question])
        q_len = question_len[window_question][:, None]
        template = self.template
        lengths = q_len[:, 0] + (end - begin) + self.special_tokens
        position = np.arange(int(lengths.max()))[None, :]
        filled = position < lengths[:, None]  # [W, L]: the real (unpadded) tokens, row by row
        question_begin = len(template.prefix)  # prefix, question, middle, context, suffix
        context_begin = q_len + question_begin + len(template.middle)
        in_question = (position >= question_begin) & (position < question_begin + q_len)
        in_context = (position >= context_begin) & (position < lengths[:, None] - len(template.suffix))

        # each real token's index into the flat token lists of all questions / all distinct contexts
        question_start = np.cumsum(question_len) - question_len
        context_start = (np.cumsum(distinct_len) - distinct_len)[context_of]
        question_index = (question_start[window_question][:, None] + position - question_begin)[in_question]
        context_index = (context_start[window_question] + begin)[:, None] + position - context_begin
        context_index = context_index[in_context]

        input_ids = np.full(filled.shape, self.pad_id, dtype=np.int64)
        token_type_ids = np.zeros(filled.shape, dtype=np.int64)
        rows = np.arange(len(lengths))
        for part, starts in (
            (template.prefix, np.zeros_like(lengths)),
            (template.middle, context_begin[:, 0] - len(template.middle)),
            (template.suffix, lengths - len(template.suffix)),
        ):
            for j, (token, token_type) in enumerate(part):
                input_ids[rows, starts + j] = token
                token_type_ids[rows, starts + j] = token_type
        flat_questions = np.fromiter(chain.from_iterable(question_ids), np.int64, int(question_len.sum()))
        input_ids[in_question] = flat_questions[question_index]
        input_ids[in_context] = np.concatenate([e.ids for e in encoded])[context_index]
        token_type_ids[in_question] = template.question_type
        token_type_ids[in_context] = template.context_type
        token_offsets = np.full((*filled.shape, 2), NO_OFFSET, dtype=np.int32)
        token_offsets[in_context] = np.concatenate([e.offsets for e in encoded])[context_index]
        word_ids = np.full(filled.shape, NO_WORD, dtype=np.int64)
        word_ids[in_context] = np.concatenate([e.words for e in encoded])[context_index]
        return Windows(
            input_ids=input_ids,
            attention_mask=filled.astype(np.int64),
            token_type_ids=token_type_ids,
            token_offsets=token_offsets,
            word_offsets=_word_offsets(token_offsets, word_ids),
            window_question=window_question,
        )


def _library(call, *args, **kwargs):
    """``call``'s result (the tokenizer library's), or ``InputError`` for texts it fails on: its exceptions, and
    its panics (pyo3's ``PanicException``, a ``BaseException``: a regex of the tokenizer's that gives up on a
    crafted text), which would otherwise pass every ``except Exception`` up to the step's ``execute``."""
    try:
        return call(*args, **kwargs)
    except Exception as error:
        raise InputError(f"the tokenizer rejected the input: {error}") from error
    except BaseException as error:
        if type(error).__name__ != "PanicException":
            raise
        raise InputError(f"the tokenizer failed on the input: {str(error).splitlines()[0]}") from None


def _spans(sizes: list[int]) -> list[tuple[int, int]]:
    """[begin, end) of each request's pairs among all requests' pairs, from the pairs per request."""
    ends = np.cumsum(sizes).tolist()
    return list(zip([0, *ends[:-1]], ends))


def _pieces(text: str, size: int) -> Iterator[str]:
    """``text`` in consecutive pieces of at least ``size`` characters (but the last), each cut after a space."""
    begin = 0
    while begin < len(text):
        end = text.find(" ", begin + size) + 1 or len(text)
        yield text[begin:end]
        begin = end


def _word_offsets(token_offsets: np.ndarray, word_ids: np.ndarray) -> np.ndarray:
    """Character span of each token's word within its window (``NO_OFFSET`` where the word is unknown).

    Tokens of one word are contiguous, so a word is a run of equal word ids in a row: its span runs from
    the first token's start to the last token's end.
    """
    rows, width = word_ids.shape
    flat_words = word_ids.ravel()
    run_starts = np.ones(rows * width, dtype=bool)
    # tokens of no word stand alone
    same_as_previous = (flat_words[1:] == flat_words[:-1]) & (flat_words[1:] != NO_WORD)
    same_as_previous[width - 1 :: width] = False  # a run never crosses into the next window
    run_starts[1:] = ~same_as_previous
    run_of = np.cumsum(run_starts) - 1
    first = np.flatnonzero(run_starts)
    last = np.r_[first[1:] - 1, rows * width - 1]
    flat_offsets = token_offsets.reshape(-1, 2)
    spans = np.stack([flat_offsets[first, 0][run_of], flat_offsets[last, 1][run_of]], axis=1)
    spans[flat_words == NO_WORD] = NO_OFFSET
    return spans.reshape(rows, width, 2).astype(np.int32)
