"""make bulk, make eval and make perf against a server started with ``SERVE_ARGS="--api-key x-api-key=..."``:
with the key (``--api-key`` in their *_ARGS, or $ELECTRA_QA_API_KEY) they get answers; without it the server
refuses them."""

import json
import os
import subprocess

import pytest

from testkit.cases import CASES
from tests.conftest import ROOT
from tests.integration.conftest import launch, stop

KEY = "x-api-key=s3cret-tools-key"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, tiny_checkpoint, triton_server):
    server = launch(tmp_path_factory.mktemp("keyed"), tiny_checkpoint, triton_server.repository, f"--api-key {KEY}")
    yield server
    stop(server.process)


def make(*args, env_key=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "ELECTRA_QA_API_KEY"}
    if env_key:
        env["ELECTRA_QA_API_KEY"] = env_key
    command = ["make", "--no-print-directory", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"id": n, "question": q, "context": c}) + "\n" for n, (q, c) in CASES.items()))
    return path


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_make_bulk_with_the_key_answers(keyed_server, questions, tmp_path, how):
    out = tmp_path / "answers.jsonl"
    flag = f" --api-key {KEY}" if how == "flag" else ""
    result = make(
        "bulk",
        f"IN={questions}",
        f"OUT={out}",
        f"URL={keyed_server.grpc_url}",
        f"BULK_ARGS=--no-progress{flag}",
        env_key=KEY if how == "environment" else None,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == list(CASES) and all("answer" in line for line in lines)


def test_make_bulk_without_the_key_is_refused(keyed_server, questions, tmp_path):
    out = tmp_path / "answers.jsonl"
    result = make("bulk", f"IN={questions}", f"OUT={out}", f"URL={keyed_server.grpc_url}", "BULK_ARGS=--no-progress")
    assert result.returncode == 2 and "AuthenticationError" in result.stderr
    assert out.read_text() == ""


def squad_file(path):
    qas = [
        {"id": n, "question": q, "answers": [{"text": c.split()[0], "answer_start": 0}]} for n, (q, c) in CASES.items()
    ]
    paragraphs = [{"context": CASES[qa["id"]][1], "qas": [qa]} for qa in qas]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


@pytest.mark.parametrize("how", ["flag", "environment", "none"])
def test_make_eval_with_the_key_scores_and_without_it_is_refused(keyed_server, tmp_path, how):
    data, out = squad_file(tmp_path / "squad.json"), tmp_path / "predictions.json"
    args = [
        "eval",
        f"DATA={data}",
        f"OUT={out}",
        f"URL={keyed_server.grpc_url}",
        f"REPOSITORY={keyed_server.repository}",
    ]
    flag = f" --api-key {KEY}" if how == "flag" else ""
    result = make(*args, f"EVAL_ARGS=--no-progress{flag}", env_key=KEY if how == "environment" else None)
    if how == "none":
        assert result.returncode == 2 and "AuthenticationError" in result.stderr
        return
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(json.loads(out.read_text())) == sorted(CASES)
    assert result.stdout.strip().splitlines()[-1].startswith("EM ")


def test_make_perf_with_the_key_from_the_environment_completes_without_errors(keyed_server, tmp_path):
    out = tmp_path / "perf"
    result = make(
        "perf",
        f"URL={keyed_server.grpc_url}",
        f"HTTP_URL={keyed_server.http_url}",
        "CONCURRENCY=1:1:1",
        "INTERVAL_MS=1000",
        f"PERF_OUT={out}",
        "PERF_ARGS=--max-trials 5 --stability-percentage 1000",  # any window is stable: the key is what counts
        env_key=KEY,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert out.with_suffix(".csv").read_text().count("\n") == 2  # header and one concurrency
    assert KEY.split("=")[1] not in result.stdout + result.stderr  # the perf_analyzer command it prints has no keys
