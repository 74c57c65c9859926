import numpy as np
import pytest
from transformers import AutoTokenizer

from preprocessing import NO_OFFSET, InputError, QATokenizer, WindowSettings
from tests.cases import CASES, LONG_CONTEXT


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return QATokenizer(tiny_checkpoint / "tokenizer.json")


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(str(tiny_checkpoint))


def test_windows_are_the_reference_pipelines_windows(tokenizer, hf_tokenizer):
    # the call pipeline('question-answering').preprocess makes for one example
    for question, context in CASES.values():
        expected = hf_tokenizer(text=question, text_pair=context, padding="do_not_pad", truncation="only_second",
                                max_length=384, stride=128, return_token_type_ids=True,
                                return_overflowing_tokens=True, return_offsets_mapping=True)
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


def test_question_longer_than_max_question_len_is_refused(tokenizer):
    with pytest.raises(InputError, match=r"question 0 is 70 tokens long; the limit is 64"):
        tokenizer.encode(["why " * 70], ["Because."])


def test_question_too_long_for_any_window_is_refused_with_its_length(tokenizer):
    with pytest.raises(InputError, match=r"question 1 is 400 tokens long; the limit is 64"):
        tokenizer.encode(["fine?", "why " * 400], ["Because.", "Because."])


def test_context_without_any_token_is_refused(tokenizer):
    with pytest.raises(InputError, match="context 0 holds no token"):
        tokenizer.encode(["What?"], ["\u0001\u0002"])


def test_questions_and_contexts_must_pair_up(tokenizer):
    with pytest.raises(InputError, match="2 questions but 1 contexts"):
        tokenizer.encode(["a?", "b?"], ["c"])


def test_settings_refuse_a_stride_that_leaves_no_room():
    with pytest.raises(ValueError):
        WindowSettings(max_seq_len=128, doc_stride=100, max_question_len=64)
