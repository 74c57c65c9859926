import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering

from preprocessing import AnswerOptions, decode
from testkit.cases import CASES
from tests.conftest import as_list, assert_same_answers, qa_tokenizer

OPTIONS = [
    {},
    {"top_k": 3},
    {"top_k": 5, "handle_impossible_answer": True},
    {"top_k": 2, "align_to_words": False},
    {"top_k": 4, "max_answer_len": 3},
]
SHORT_CONTEXTS = ["x", "alpha beta", "alpha beta gamma delta", "alpha beta gamma delta epsilon zeta"]


@pytest.fixture(scope="module")
def answer(tiny_checkpoint):
    """Our tokenizer + the PyTorch model + our decoder: the served pipeline minus Triton and ONNX."""
    tokenizer = qa_tokenizer(tiny_checkpoint / "tokenizer.json")
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_checkpoint)).eval()

    def run(questions, contexts, **options):
        w = tokenizer.encode(questions, contexts)
        with torch.no_grad():
            out = model(
                input_ids=torch.tensor(w.input_ids),
                attention_mask=torch.tensor(w.attention_mask),
                token_type_ids=torch.tensor(w.token_type_ids),
            )
        return decode(
            out.start_logits.numpy(),
            out.end_logits.numpy(),
            w.token_offsets,
            w.word_offsets,
            w.window_question,
            contexts,
            AnswerOptions(**options),
        )

    return run


def rows(decoded, q):
    return [
        (decoded.text[q, j], float(decoded.score[q, j]), int(decoded.start[q, j]), int(decoded.end[q, j]))
        for j in range(decoded.text.shape[1])
        if decoded.start[q, j] >= 0
    ]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_decode_matches_the_reference_pipeline_on_every_case(answer, reference, options):
    questions, contexts = zip(*CASES.values())
    decoded = answer(list(questions), list(contexts), **options)
    for q, (question, context) in enumerate(CASES.values()):
        assert_same_answers(rows(decoded, q), as_list(reference(question=question, context=context, **options)))


@pytest.mark.parametrize("context", SHORT_CONTEXTS)
@pytest.mark.parametrize("top_k", [2, 5, 20])
def test_decode_matches_the_reference_when_a_short_context_has_fewer_spans_than_top_k(
    answer, reference, context, top_k
):
    decoded = answer(["which one?"], [context], top_k=top_k)
    assert_same_answers(rows(decoded, 0), as_list(reference(question="which one?", context=context, top_k=top_k)))


def test_decode_answer_text_is_the_context_slice(answer):
    questions, contexts = zip(*CASES.values())
    decoded = answer(list(questions), list(contexts), top_k=3)
    for q, context in enumerate(contexts):
        for text, _, start, end in rows(decoded, q):
            assert text == context[start:end]


def test_decode_pads_with_filler_entries_when_fewer_answers_than_top_k(answer):
    decoded = answer(["which?"], ["x"], top_k=20, align_to_words=False)
    assert decoded.text.shape == (1, 20)
    assert (decoded.start[0, 2:] == -1).all() and (decoded.end[0, 2:] == -1).all()


def test_decode_scores_are_probabilities_sorted_best_first(answer):
    decoded = answer([CASES["squad"][0]], [CASES["squad"][1]], top_k=5)
    scores = decoded.score[0]
    assert (np.diff(scores) <= 0).all() and 0 < scores[0] <= 1


def test_decode_offers_a_scored_empty_answer_only_when_impossible_answers_are_allowed(answer):
    without = answer(["which?"], ["alpha beta"], top_k=8)
    with_null = answer(["which?"], ["alpha beta"], top_k=8, handle_impossible_answer=True)
    assert not [score for text, score, _, _ in rows(without, 0) if text == "" and score > 0]
    assert [(s, e) for text, score, s, e in rows(with_null, 0) if text == "" and score > 0] == [(0, 0)]


def test_decode_handles_a_window_whose_spans_number_exactly_what_it_asks_for(answer):
    # [CLS] [SEP] 0 [SEP]: 16 entries in the outer product, 16 asked for with top_k=3 (the reference's
    # argpartition raises here; found by the fuzz tests)
    decoded = answer(["\x1b"], ["0"], top_k=3)
    assert rows(decoded, 0)[0][0] == "0" and all(t == "0"[s:e] for t, _, s, e in rows(decoded, 0))


def degenerate_window(rng, width, question, context, zeros):
    """Probabilities of one window as ``decode`` holds them: [CLS] (zeroed), question, [SEP], context, [SEP],
    padding; ``zeros`` of the context's tokens at exactly 0 (logits far below the others)."""
    keep = np.zeros(width, bool)
    keep[0] = True
    keep[question + 2 : question + 2 + context] = True
    p_start, p_end = (np.where(keep, rng.random(width, np.float32), np.float32(0)) for _ in range(2))
    p_start[0] = p_end[0] = 0
    for p in (p_start, p_end):
        p[rng.choice(np.flatnonzero(keep)[1:], zeros, replace=False)] = 0
    return p_start, p_end, keep


@pytest.mark.parametrize("max_answer_len", [1, 3, 15, 512])
@pytest.mark.parametrize(("question", "context", "zeros"), [(3, 2, 0), (40, 5, 2), (5, 300, 300), (10, 200, 190)])
def test_the_zero_filled_windows_replay_the_references_own_span_selection(max_answer_len, question, context, zeros):
    from transformers.pipelines.question_answering import decode_spans

    from preprocessing.decode import reference_spans

    rng = np.random.default_rng(question + context + zeros)
    width = question + context + 3 + 7
    offset = np.arange(width)[None, :] - np.arange(width)[:, None]
    band_mask = ((offset >= 0) & (offset < max_answer_len)).astype(np.float32)
    for k in (1, 12, 50):
        p_start, p_end, keep = degenerate_window(rng, width, question, context, zeros)
        n = int(np.flatnonzero(keep)[-1]) + 2
        scores, starts, ends = reference_spans(p_start, p_end, keep, k, band_mask)
        want_starts, want_ends, want_scores = decode_spans(p_start[:n], p_end[:n], k, max_answer_len, keep[:n])
        assert starts.tolist() == want_starts.tolist() and ends.tolist() == want_ends.tolist()
        np.testing.assert_array_equal(scores, want_scores)


def test_windows_whose_context_probabilities_underflow_decode_within_bounded_memory():
    import tracemalloc

    n_windows, width = 256, 384  # the widest windows the decoder step takes (the tokenizer's max_seq_len)
    offsets = np.full((n_windows, width, 2), -1, np.int32)
    offsets[:, 1:-1, 0] = np.arange(width - 2)
    offsets[:, 1:-1, 1] = np.arange(width - 2) + 1
    logits = np.full((n_windows, width), -1e30, np.float32)
    logits[:, 0] = 0  # [CLS] takes all of the softmax: every context probability is exactly 0
    tracemalloc.start()
    decoded = decode(logits, logits, offsets, offsets.copy(), np.zeros(n_windows, np.int32), ["x" * width])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert decoded.text.shape == (1, 1) and decoded.score[0, 0] == 0
    assert peak < 64e6, f"{peak / 1e6:.0f} MB"
