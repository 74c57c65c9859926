"""``make serve MODEL=<checkpoint of another family>``: the same ensemble serves it over gRPC, answers as the 4.57.6
pipeline gives them on the same files. ALBERT (sentencepiece, shared layers, token types) and DeBERTa-v3
(sentencepiece, disentangled attention, its graph not fused); every family's parity on the served path without
Triton is tests/unit/test_families.py. The torch engine, whose encoder is ELECTRA's and its kin's, is refused for
them by name."""

import os
import subprocess
import sys

import pytest

from perf.cases import CASES
from perf.inputs import squad_sized_pairs
from serving.export import copy_repository, read_record
from tests.conftest import ROOT, as_list, assert_same_answers
from tests.integration.conftest import launch, stop


@pytest.fixture(scope="module", params=["albert", "deberta-v2"])
def family_server(request, tmp_path_factory, triton_server):
    work = tmp_path_factory.mktemp(request.param)
    checkpoint = work / "checkpoint"
    subprocess.run(  # sentencepiece's trainer in a process of its own (tests/unit/test_families.py)
        [
            sys.executable,
            "-m",
            "serving.checkpoints",
            "--size",
            "tiny",
            "--family",
            request.param,
            "--out",
            str(checkpoint),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    repository = copy_repository(ROOT / "model_repository", work / "model_repository")
    server = launch(work, checkpoint, repository)
    yield request.param, checkpoint, server
    stop(server.process)


def test_another_family_is_served_with_the_pipelines_answers(family_server):
    from transformers import pipeline

    from client import TritonQA

    family, checkpoint, server = family_server
    assert read_record(server.repository).family == family
    reference = pipeline("question-answering", model=str(checkpoint), tokenizer=str(checkpoint), device=-1)
    pairs = [*CASES.values(), *squad_sized_pairs(8)]
    with TritonQA(server.grpc_url, timeout_s=60) as qa:
        for top_k, options in ((1, {}), (3, {"handle_impossible_answer": True}), (2, {"max_answer_len": 4})):
            for (question, context), got in zip(pairs, qa.top_answers_many(pairs, top_k, **options)):
                expected = as_list(reference(question=question, context=context, top_k=top_k, **options))
                assert_same_answers([(a.text, a.score, a.start, a.end) for a in got], expected)


def refused_serve(repository, engine: str) -> str:
    """``serving.serve --no-export --engine <engine>`` on an export that engine cannot run: exit status 2 before
    any server starts; its message."""
    result = subprocess.run(
        [sys.executable, "-m", "serving.serve", "--no-export", "--engine", engine, "--repository", str(repository)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    return result.stderr


def test_the_torch_engine_is_refused_for_a_family_it_does_not_reproduce(family_server):
    family, _, server = family_server
    engines = "ENGINE=onnxruntime" + (" or ENGINE=openvino" if family != "deberta-v2" else "")
    expected = (
        "the torch engine reproduces ELECTRA, BERT, DistilBERT, RoBERTa and XLM-RoBERTa checkpoints only; this one is "
    )
    assert f"{expected}{family}: serve it with {engines}" in refused_serve(server.repository, "torch")


def test_an_engine_that_cannot_run_the_export_is_refused_by_name(family_server):
    family, _, server = family_server
    if family != "deberta-v2":
        pytest.skip("OpenVINO compiles this family's graph")
    expected = "the openvino engine does not compile this export's graph; this one is deberta-v2"
    assert expected in refused_serve(server.repository, "openvino")


@pytest.fixture(scope="module")
def roberta_on_torch(tmp_path_factory, triton_server):
    """A RoBERTa checkpoint served on the torch engine (the GPU path's engine and config, here on the CPU)."""
    from serving.configs import torch_engine_on_cpu

    work = tmp_path_factory.mktemp("roberta-torch")
    checkpoint = work / "checkpoint"
    command = [sys.executable, "-m", "serving.checkpoints", "--size", "tiny", "--family", "roberta"]
    subprocess.run([*command, "--out", str(checkpoint)], check=True, capture_output=True, timeout=600)
    repository = copy_repository(ROOT / "model_repository", work / "model_repository")
    torch_engine_on_cpu(repository)
    server = launch(work, checkpoint, repository, engine="torch")
    yield checkpoint, server
    stop(server.process)


@pytest.mark.skipif(
    bool(os.environ.get("SERVER_PYTHON")), reason="the server's environment of another Python has no PyTorch"
)
def test_the_torch_engine_serves_roberta_with_the_pipelines_answers(roberta_on_torch):
    from transformers import pipeline

    from client import TritonQA

    checkpoint, server = roberta_on_torch
    reference = pipeline("question-answering", model=str(checkpoint), tokenizer=str(checkpoint), device=-1)
    pairs = list(CASES.values())
    with TritonQA(server.grpc_url, timeout_s=60) as qa:
        for (question, context), got in zip(pairs, qa.top_answers_many(pairs, 3)):
            expected = as_list(reference(question=question, context=context, top_k=3))
            assert_same_answers([(a.text, a.score, a.start, a.end) for a in got], expected)
    assert "electra: torch on cpu" in server.log.read_text()
