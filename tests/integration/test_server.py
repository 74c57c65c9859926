"""The served product as a user meets it: the card's snippet, readiness, batching of concurrent requests."""

import urllib.request
from concurrent.futures import ThreadPoolExecutor

from client import ENSEMBLE, TritonQA
from testkit.cases import CASES, LONG_CONTEXT
from testkit.servers import settled


def test_model_card_snippet_migrated_to_triton_qa(triton_server):
    # from the card: nlp = pipeline('question-answering', model=..., tokenizer=...)
    nlp = TritonQA(triton_server.grpc_url)
    result = nlp(
        {
            "question": "What is the answer to life the universe and everything?",
            "context": "42 is the answer to life the universe and everything.",
        }
    )
    context = "42 is the answer to life the universe and everything."
    assert set(result) == {"score", "start", "end", "answer"}
    assert result["answer"] == context[result["start"] : result["end"]] and result["answer"]
    assert 0 < result["score"] <= 1
    nlp.close()


def test_server_reports_ready_on_the_http_health_endpoint(triton_server, qa):
    assert triton_server.ready()
    assert qa.is_ready()


def test_ensemble_is_listed_with_its_steps(triton_server):
    config = triton_server.admin.config(ENSEMBLE)
    assert [step["model_name"] for step in config["ensemble_scheduling"]["step"]] == ["tokenizer", "encoder", "decoder"]


def test_windows_of_concurrent_requests_are_batched_by_the_model_step(triton_server, qa):
    def stats():
        entry = triton_server.admin.statistics("encoder")
        return entry["inference_count"], entry["execution_count"]

    before = settled(stats)  # a neighbour's last requests counted first
    pairs = [(CASES["squad"][0], CASES["squad"][1]), ("Who founded the launch pad?", LONG_CONTEXT)] * 8
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda pair: qa.ask(*pair), pairs))
    after = settled(stats)
    windows, executions = after[0] - before[0], after[1] - before[1]
    assert all(a.text for a in answers)
    assert windows > len(pairs)  # the long context makes several windows each
    assert executions < len(pairs), f"{executions} model executions for {len(pairs)} concurrent requests"


def test_long_document_is_answered_in_one_request(qa, reference):
    context = " ".join([LONG_CONTEXT] * 4)
    got = qa.ask("Who founded the launch pad?", context)
    expected = reference(question="Who founded the launch pad?", context=context)
    assert (got.text, got.start, got.end) == (expected["answer"], expected["start"], expected["end"])


def test_140k_character_document_is_answered_like_the_reference(qa, reference, triton_server):
    from testkit.inputs import long_document

    context = long_document(140_000)
    got = qa.top_answers("Who received the grain?", context, 3)
    expected = reference(question="Who received the grain?", context=context, top_k=3)
    assert [(a.text, a.start, a.end) for a in got] == [(e["answer"], e["start"], e["end"]) for e in expected]


def test_64_questions_in_one_request_are_answered_like_the_reference(qa, reference):
    pairs = [
        (f"Question number {i}: who wrote it?", f"Text {i} was written by author {i} in {1900 + i}.") for i in range(64)
    ]
    got = qa.ask_many(pairs)
    for answer, (question, context) in zip(got, pairs):
        expected = reference(question=question, context=context)
        assert (answer.text, answer.start, answer.end) == (expected["answer"], expected["start"], expected["end"])


def test_padding_executed_by_the_model_step_is_reported_as_a_metric(triton_server, qa):
    import re

    qa.ask_many([("Who?", "Ada."), ("Who founded the launch pad?", LONG_CONTEXT)])
    with urllib.request.urlopen(f"{triton_server.metrics_url}/metrics") as response:
        text = response.read().decode()
    values = {kind: float(v) for kind, v in re.findall(r'electra_qa_model_tokens_total\{kind="(\w+)"\} (\S+)', text)}
    assert values["executed"] >= values["real"] > 0
