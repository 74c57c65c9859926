"""The served product as a user meets it: the card's snippet, readiness, batching of concurrent requests."""

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from client import TritonQA
from tests.cases import CASES, LONG_CONTEXT


def test_model_card_snippet_migrated_to_triton_qa(triton_server):
    # from the card: nlp = pipeline('question-answering', model=..., tokenizer=...)
    nlp = TritonQA(triton_server.grpc_url)
    result = nlp({"question": "What is the answer to life the universe and everything?",
                  "context": "42 is the answer to life the universe and everything."})
    context = "42 is the answer to life the universe and everything."
    assert set(result) == {"score", "start", "end", "answer"}
    assert result["answer"] == context[result["start"]:result["end"]] and result["answer"]
    assert 0 < result["score"] <= 1
    nlp.close()


def test_server_reports_ready_on_the_http_health_endpoint(triton_server, qa):
    assert triton_server.ready()
    assert qa.is_ready()


def test_ensemble_is_listed_with_its_steps(triton_server):
    with urllib.request.urlopen(f"{triton_server.http_url}/v2/models/electra_qa/config") as response:
        config = json.load(response)
    assert [step["model_name"] for step in config["ensemble_scheduling"]["step"]] == ["tokenizer", "electra", "decoder"]


def test_windows_of_concurrent_requests_are_batched_by_the_model_step(triton_server, qa):
    def stats():
        url = f"{triton_server.http_url}/v2/models/electra/stats"
        with urllib.request.urlopen(url) as response:
            entry = json.load(response)["model_stats"][0]
        return entry["inference_count"], entry["execution_count"]

    before = stats()
    pairs = [(CASES["squad"][0], CASES["squad"][1]), ("Who founded the launch pad?", LONG_CONTEXT)] * 8
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda pair: qa.ask(*pair), pairs))
    after = stats()
    windows, executions = after[0] - before[0], after[1] - before[1]
    assert all(a.text for a in answers)
    assert windows > len(pairs)  # the long context makes several windows each
    assert executions < len(pairs), f"{executions} model executions for {len(pairs)} concurrent requests"


def test_long_document_is_answered_in_one_request(qa, reference):
    context = " ".join([LONG_CONTEXT] * 4)
    got = qa.ask("Who founded the launch pad?", context)
    expected = reference(question="Who founded the launch pad?", context=context)
    assert (got.text, got.start, got.end) == (expected["answer"], expected["start"], expected["end"])
