"""What travels between the steps (runtime.tensors): packed exactly, unpacked to what the tokenizer made."""

import numpy as np

from runtime.tensors import ATTENTION_BIT, TYPE_BIT, pack_tokens, unpack_tokens, window_questions, window_tensors


def test_tokens_pack_ids_types_and_attention_exactly_within_int32():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 250_002, (4, 30))  # any vocabulary: XLM-R's is 250,002
    mask = (np.arange(30) < np.array([[30], [17], [3], [1]])).astype(np.int64)
    types = rng.integers(0, 2, (4, 30)) * mask
    ids = np.where(mask == 1, ids, 0)
    ids[0, 4], ids[1, 2] = 0, 102  # a literal [PAD] or [SEP] in the text is still attended, its type kept
    tokens = pack_tokens(ids, mask, types)
    assert tokens.dtype == np.int64 and tokens.max() < 2**31 and (tokens[mask == 0] == 0).all()
    for got, expected in zip(unpack_tokens(tokens), (ids, mask, types)):
        np.testing.assert_array_equal(got, expected)
    assert unpack_tokens(np.array([[ATTENTION_BIT + TYPE_BIT + 7]]))[0].tolist() == [[7]]


def test_window_context_numbers_the_questions_from_their_first_windows():
    window_context = np.array([[b"ctx a"], [b""], [b""], [b"ctx b"], [b"ctx c"], [b""]], dtype=object)
    assert window_questions(window_context).tolist() == [0, 0, 0, 1, 2, 2]
    assert window_questions(np.array([[b""], [b"x"]], dtype=object)).tolist() == [-1, 0]  # refused by the decoder


def test_window_tensors_are_what_the_tokenizer_step_sends(tiny_checkpoint):
    from tests.conftest import qa_tokenizer

    windows = qa_tokenizer(tiny_checkpoint / "tokenizer.json").encode(["Who?", "When?"], ["Ada wrote it.", "In 1843."])
    sent = window_tensors(windows, np.array([b"Ada wrote it.", b"In 1843."], dtype=object))
    assert set(sent) == {"tokens", "offsets", "window_context"}
    np.testing.assert_array_equal(unpack_tokens(sent["tokens"])[0], windows.input_ids)
    np.testing.assert_array_equal(sent["offsets"][..., :2], windows.token_offsets)
    np.testing.assert_array_equal(sent["offsets"][..., 2:], windows.word_offsets)
    assert sent["window_context"].tolist() == [[b"Ada wrote it."], [b"In 1843."]]
