import random
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from preprocessing import NO_OFFSET, InputError, QATokenizer, WindowSettings
from preprocessing.outcomes import refusal
from preprocessing.tokenize import COUNT_PIECE_CHARS
from testkit.cases import CASES, LONG_CONTEXT
from testkit.inputs import long_document
from tests.conftest import qa_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return qa_tokenizer(tiny_checkpoint / "tokenizer.json")


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(str(tiny_checkpoint))


def pipeline_windows(hf_tokenizer, question, context):
    """The call pipeline('question-answering').preprocess makes for one example."""
    return hf_tokenizer(
        text=question,
        text_pair=context,
        padding="do_not_pad",
        truncation="only_second",
        max_length=384,
        stride=128,
        return_token_type_ids=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def test_windows_are_the_reference_pipelines_windows(tokenizer, hf_tokenizer):
    for question, context in CASES.values():
        expected = pipeline_windows(hf_tokenizer, question, context)
        windows = tokenizer.encode([question], [context])
        assert len(windows.input_ids) == len(expected["input_ids"])
        for row, ids in enumerate(expected["input_ids"]):
            n = len(ids)
            assert windows.input_ids[row, :n].tolist() == ids
            assert windows.token_type_ids[row, :n].tolist() == expected["token_type_ids"][row]
            assert windows.attention_mask[row].sum() == n
            in_context = [s == 1 for s in expected.sequence_ids(row)]
            assert ((windows.token_offsets[row, :n, 0] != NO_OFFSET).tolist()) == in_context


def test_long_context_makes_overlapping_windows_of_at_most_max_seq_len(tokenizer):
    windows = tokenizer.encode(["Who founded it?"], [LONG_CONTEXT])
    assert len(windows.input_ids) > 5
    assert windows.input_ids.shape[1] == 384
    assert (windows.window_question == 0).all()


def test_several_questions_are_tokenized_together_and_keep_their_order(tokenizer):
    questions = ["Who?", "When did it happen?"]
    contexts = [CASES["squad"][1], LONG_CONTEXT]
    windows = tokenizer.encode(questions, contexts)
    assert windows.window_question[0] == 0 and windows.window_question[-1] == 1
    alone = tokenizer.encode(questions[1:], contexts[1:])
    picked = windows.select(1, 1)
    np.testing.assert_array_equal(picked.input_ids, alone.input_ids)
    np.testing.assert_array_equal(picked.word_offsets, alone.word_offsets)
    assert (picked.window_question == 0).all()


def test_select_trims_padding_to_the_requests_longest_window(tokenizer):
    windows = tokenizer.encode(["Who?", "Who?"], ["Ada did.", LONG_CONTEXT])
    short = windows.select(0, 1)
    assert short.input_ids.shape == (1, short.attention_mask.sum())
    assert windows.input_ids.shape[1] == 384


def test_word_offsets_span_whole_words(tokenizer):
    context = "Unbelievably, Zoë's café reopened."
    windows = tokenizer.encode(["What reopened?"], [context])
    words = {context[s:e] for s, e in windows.word_offsets[0].tolist() if s != NO_OFFSET}
    assert {"Unbelievably", ",", "Zoë", "café", "reopened", "."} <= words


def test_token_offsets_are_character_offsets_into_the_context(tokenizer):
    context = "東京は日本の首都です。🚀 launch"
    windows = tokenizer.encode(["どこ?"], [context])
    spans = [(s, e) for s, e in windows.token_offsets[0].tolist() if s != NO_OFFSET]
    assert spans[0] == (0, 1) and context[slice(*spans[0])] == "東"
    assert all(0 <= s < e <= len(context) for s, e in spans)


@pytest.mark.parametrize("question_tokens", [65, 120, 250, 252])
@pytest.mark.parametrize("context", ["short", "long"])
def test_long_questions_make_the_reference_pipelines_windows(tokenizer, hf_tokenizer, question_tokens, context):
    # the pipeline's fast tokenizer ignores max_question_len: a long question only leaves less room per window
    question = " ".join(["why"] * (question_tokens - 1)) + "?"
    text = CASES["squad"][1] if context == "short" else LONG_CONTEXT
    expected = pipeline_windows(hf_tokenizer, question, text)["input_ids"]
    planned = tokenizer.plan([question], [text], max_windows=100_000)
    windows = tokenizer.encode([question], [text])
    assert [row[:n].tolist() for row, n in zip(windows.input_ids, windows.lengths)] == expected
    assert planned[0] >= len(expected)


def test_plan_counts_windows_exactly_where_it_has_to(tokenizer):
    # a question leaving 129 tokens of room and a stride of 128: one more window per context token
    question = " ".join(["why"] * 251) + "?"
    context = " ".join(["bridge"] * 600)
    planned = tokenizer.plan([question], [context], max_windows=1024)
    assert planned.tolist() == [472] == [len(tokenizer.encode([question], [context]).window_question)]


@pytest.mark.parametrize(("question_tokens", "room"), [(253, 128), (300, 81), (380, 1), (381, 0), (500, 0)])
def test_a_question_that_leaves_no_room_beyond_the_stride_is_refused_like_the_pipeline(
    tokenizer, question_tokens, room
):
    question = " ".join(["why"] * (question_tokens - 1)) + "?"
    with pytest.raises(
        InputError,
        match=rf"question 1 is {question_tokens} tokens long: it leaves {room} tokens "
        r"of a 384-token window for the context, which must exceed the doc_stride "
        r"of 128 when the context \(200 tokens\) does not fit in one window",
    ):
        tokenizer.plan(["fine?", question], ["Because.", " ".join(["bridge"] * 200)], max_windows=1024)


def test_a_long_question_with_a_context_that_fits_its_room_is_answered(tokenizer):
    question = " ".join(["why"] * 299) + "?"  # 300 tokens: 81 left for the context
    planned = tokenizer.plan([question], ["Because of the bridge."], max_windows=1024)
    assert planned.tolist() == [1] and len(tokenizer.encode([question], ["Because of the bridge."]).input_ids) == 1


def test_plan_refuses_contexts_over_the_window_limit_before_encoding_them(tokenizer):
    with pytest.raises(InputError, match=r"the contexts make at least \d+ windows of 384 tokens; the limit is 8"):
        tokenizer.plan(["Who?"], [LONG_CONTEXT * 2], max_windows=8)


def test_long_texts_counted_in_pieces_count_as_many_tokens_as_whole(tokenizer):
    rng = random.Random(7)
    texts = [
        _random_text(rng, 40_000),
        "東京は日本の首都です。 Ünïcödé accents, ﬁ ligatures\ttabs\nand lines. " * 3_000,
        long_document(250_000),
    ]
    whole = tokenizer.token_counts(texts)
    assert tokenizer.token_counts(texts, [10**9] * len(texts)).tolist() == whole.tolist()
    assert all(len(text) > COUNT_PIECE_CHARS for text in texts)


def test_a_count_stops_once_the_text_is_over_its_limit(tokenizer):
    text = "a " * 500_000  # 500,000 tokens
    stopped = tokenizer.token_counts([text, "a b c"], [1000, 1])
    assert 1000 < stopped[0] <= COUNT_PIECE_CHARS and stopped[1] == 3  # one piece; short texts counted whole
    # planning refuses it as surely: at least as many windows as the counted prefix makes
    with pytest.raises(InputError, match=r"the contexts make at least \d+ windows of 384 tokens; the limit is 8 "):
        tokenizer.plan(["Who?"], [text], max_windows=8)
    question = " ".join(["why"] * 299) + "?"  # leaves 81 tokens of room: refused past 81 context tokens
    with pytest.raises(InputError, match=r"when the context \(at least \d+ tokens\) does not fit in one window"):
        tokenizer.plan([question], [text], max_windows=1024)


def test_planning_counts_exactly_only_what_the_bounds_leave_open(tokenizer):
    requests = [(["Who?"], [CASES["squad"][1]]), (["Who?"], ["a " * 150_000]), ([" ".join(["why"] * 299)], ["A."])]
    assert tokenizer.counting_chars(requests, 1024) == [0, 300_004, len(requests[2][0][0]) + 2]


def test_context_without_any_token_is_refused(tokenizer):
    with pytest.raises(InputError, match="context 0 holds no token"):
        tokenizer.encode(["What?"], ["\u0001\u0002"])


def test_questions_and_contexts_must_pair_up(tokenizer):
    with pytest.raises(InputError, match="2 questions but 1 contexts"):
        tokenizer.encode(["a?", "b?"], ["c"])


def test_settings_refuse_a_stride_not_below_the_window():
    with pytest.raises(ValueError):
        WindowSettings(max_seq_len=128, doc_stride=128)


def _library_windows(tokenizer_file, settings, question, context):
    """The oracle: the tokenizer library's own pair encoding, truncated (only_second) with the stride, one
    row per window: (ids, type ids, token spans in the context, word spans in the context)."""
    library = Tokenizer.from_file(str(tokenizer_file))
    library.no_padding()
    library.enable_truncation(max_length=settings.max_seq_len, stride=settings.doc_stride, strategy="only_second")
    encoding = library.encode(question, context)
    rows = []
    for window in (encoding, *encoding.overflowing):
        in_context = [s == 1 for s in window.sequence_ids]
        spans = [span if c else (NO_OFFSET, NO_OFFSET) for span, c in zip(window.offsets, in_context)]
        words: dict[int, list[int]] = {}
        for word, span, c in zip(window.word_ids, spans, in_context):
            if c and word is not None:
                words.setdefault(word, []).extend(span)
        word_spans = [
            (min(words[w]), max(words[w])) if c and w is not None else (NO_OFFSET, NO_OFFSET)
            for w, c in zip(window.word_ids, in_context)
        ]
        rows.append((window.ids, window.type_ids, spans, word_spans))
    return rows


def _random_text(rng, words):
    pieces = [
        "Zoë",
        "café",
        "東京",
        "🚀",
        "naïve",
        "[SEP]",
        "\u0301",
        "\t",
        "  ",
        "ß",
        "İstanbul",
        "—",
        "1,800",
        "A.B.",
    ]
    return " ".join(
        rng.choice(pieces) if rng.random() < 0.2 else "".join(rng.choices("abcdefg.,'-", k=rng.randint(1, 9)))
        for _ in range(words)
    )


@pytest.mark.parametrize(("max_seq_len", "doc_stride"), [(384, 128), (64, 16), (24, 5)])
def test_windows_are_cut_exactly_as_the_tokenizer_library_truncates_with_a_stride(
    tiny_checkpoint, max_seq_len, doc_stride
):
    # encode() cuts windows from each text's own tokens in arrays; the library truncating the pair is the oracle
    settings = WindowSettings(max_seq_len=max_seq_len, doc_stride=doc_stride)
    tokenizer = QATokenizer(tiny_checkpoint / "tokenizer.json", settings)
    rng = random.Random(max_seq_len)
    pairs = [*CASES.values(), ("Who founded it?", LONG_CONTEXT)]
    pairs += [(_random_text(rng, rng.randint(1, 4)), _random_text(rng, rng.randint(1, 300))) for _ in range(40)]
    pairs = [(q, c) for q, c in pairs if refusal(tokenizer.plan_requests([([q], [c])], 10**6)[0]) is None]
    windows = tokenizer.encode([q for q, _ in pairs], [c for _, c in pairs])
    for i, (question, context) in enumerate(pairs):
        got = windows.select(i, 1)
        expected = _library_windows(tiny_checkpoint / "tokenizer.json", settings, question, context)
        assert len(got.input_ids) == len(expected), (question, context)
        for row, (ids, type_ids, spans, word_spans) in enumerate(expected):
            n = len(ids)
            assert got.attention_mask[row].tolist() == [1] * n + [0] * (got.input_ids.shape[1] - n)
            assert got.input_ids[row, :n].tolist() == ids
            assert got.token_type_ids[row, :n].tolist() == type_ids
            assert [tuple(s) for s in got.token_offsets[row, :n].tolist()] == spans
            assert [tuple(s) for s in got.word_offsets[row, :n].tolist()] == word_spans


class EncodedTexts:
    """A QATokenizer's library tokenizer, recording the texts each call encodes."""

    def __init__(self, tokenizer):
        self.inner, self.texts = tokenizer._tokenizer, []
        tokenizer._tokenizer = self

    def encode_batch(self, texts, **kwargs):
        self.texts.extend(texts)
        return self.inner.encode_batch(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_questions_about_one_context_get_the_windows_each_pair_gets_alone(tiny_checkpoint):
    tokenizer = qa_tokenizer(tiny_checkpoint / "tokenizer.json", cache_bytes=1_000_000)
    encoded = EncodedTexts(tokenizer)
    questions = ["Who founded it?", "When?", "Where was it founded and by whom, exactly?", "Why?", "What [SEP] is it?"]
    together = tokenizer.encode(questions, [LONG_CONTEXT] * len(questions))
    assert encoded.texts.count(LONG_CONTEXT) == 1  # the shared context is encoded once
    alone = qa_tokenizer(tiny_checkpoint / "tokenizer.json")  # no cache
    for i, question in enumerate(questions):
        expected, got = alone.encode([question], [LONG_CONTEXT]), together.select(i, 1)
        for name in ("input_ids", "attention_mask", "token_type_ids", "token_offsets", "word_offsets"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    again = tokenizer.encode(questions[:2], [LONG_CONTEXT, "Ada wrote it."])  # a later call: from the cache
    assert encoded.texts.count(LONG_CONTEXT) == 1 and encoded.texts.count("Ada wrote it.") == 1
    np.testing.assert_array_equal(again.select(0, 1).input_ids, together.select(0, 1).input_ids)


def test_the_context_cache_keeps_the_most_recently_used_within_its_bytes(tiny_checkpoint):
    """Each entry counts its text as Python holds it (a character outside Latin-1 makes every character 2 or 4
    bytes), its arrays and an overhead; the least recently used go first."""
    from preprocessing.tokenize import ENTRY_OVERHEAD_BYTES, ContextCache

    contexts = ["one two three four five six seven", "eight nine ten eleven twelve", "a b c d e f g h i j k"]
    probe = qa_tokenizer(tiny_checkpoint / "tokenizer.json", cache_bytes=10**6)
    for context in contexts:
        probe.encode(["Who?"], [context])
    sizes = [ContextCache.entry_bytes(c, probe.cache.get(c)) for c in contexts]
    assert sizes[0] == sys.getsizeof(contexts[0]) + 7 * 16 + ENTRY_OVERHEAD_BYTES  # 7 tokens, 16 bytes each

    tokenizer = qa_tokenizer(tiny_checkpoint / "tokenizer.json", cache_bytes=sizes[1] + sizes[2])
    encoded = EncodedTexts(tokenizer)
    for context in contexts:  # the first is dropped for the third
        tokenizer.encode(["Who?"], [context])
    assert len(tokenizer.cache) == 2 and tokenizer.cache.bytes == sizes[1] + sizes[2]
    tokenizer.encode(["Who?"], [contexts[1]])
    tokenizer.encode(["Who?"], [contexts[0]])
    assert [encoded.texts.count(c) for c in contexts] == [2, 1, 1]
    assert tokenizer.cache.bytes <= tokenizer.cache.max_bytes
    tokenizer.encode(["Who?"], [" ".join(["word"] * 200)])  # larger than the whole cache: not kept
    assert tokenizer.cache.bytes <= tokenizer.cache.max_bytes and len(tokenizer.cache) <= 2
    assert qa_tokenizer(tiny_checkpoint / "tokenizer.json").cache.max_bytes == 0  # off unless asked for


def test_a_context_of_many_characters_per_token_is_encoded_but_never_kept(tiny_checkpoint):
    """Control characters around one emoji: 4 bytes a character for Python, a token or two after normalising.
    Kept, a few such requests would fill the cache's bytes (or, bounded in tokens, the memory)."""
    tokenizer = qa_tokenizer(tiny_checkpoint / "tokenizer.json", cache_bytes=10**9)
    bomb = "\x01" * 200_000 + "\U0001f600 cat"
    windows = tokenizer.encode(["What?"], [bomb])
    assert windows.input_ids.shape[0] == 1 and len(tokenizer.cache) == 0 and tokenizer.cache.bytes == 0
    tokenizer.encode(["What?"], ["A cat sat on the mat."])
    assert len(tokenizer.cache) == 1
