"""``make serve MODEL=<checkpoint of another family>``: the same ensemble serves it over gRPC, answers as the 4.57.6
pipeline gives them on the same files. ALBERT (sentencepiece, shared layers, token types) and DeBERTa-v3
(sentencepiece, disentangled attention, its graph not fused) on ONNX Runtime; RoBERTa and DeBERTa-v3 on the torch
engine's own encoders. Every family's parity on the served path without Triton, on every engine, is
tests/unit/test_families.py."""

import os

import pytest

from serving.export import copy_repository, read_record
from testkit.cases import CASES
from testkit.inputs import squad_sized_pairs
from tests.conftest import ROOT, as_list, assert_same_answers, family_checkpoint
from tests.integration.conftest import launch, stop


@pytest.fixture(scope="module", params=["albert", "deberta-v2"])
def family_server(request, tmp_path_factory, triton_server):
    work = tmp_path_factory.mktemp(request.param)
    checkpoint = family_checkpoint(work / "checkpoint", request.param)
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


@pytest.fixture(scope="module", params=["roberta", "deberta-v2"])
def on_torch(request, tmp_path_factory, triton_server):
    """A checkpoint served on the torch engine (the GPU path's engine and config, here on the CPU): RoBERTa on
    ELECTRA's kin's encoder, DeBERTa-v3 on its own."""
    from serving.configs import torch_engine_on_cpu

    work = tmp_path_factory.mktemp(f"{request.param}-torch")
    checkpoint = family_checkpoint(work / "checkpoint", request.param)
    repository = copy_repository(ROOT / "model_repository", work / "model_repository")
    torch_engine_on_cpu(repository)
    server = launch(work, checkpoint, repository, engine="torch")
    yield checkpoint, server
    stop(server.process)


@pytest.mark.skipif(
    bool(os.environ.get("SERVER_PYTHON")), reason="the server's environment of another Python has no PyTorch"
)
def test_the_torch_engine_serves_other_families_with_the_pipelines_answers(on_torch):
    from transformers import pipeline

    from client import TritonQA

    checkpoint, server = on_torch
    reference = pipeline("question-answering", model=str(checkpoint), tokenizer=str(checkpoint), device=-1)
    pairs = list(CASES.values())
    with TritonQA(server.grpc_url, timeout_s=60) as qa:
        for (question, context), got in zip(pairs, qa.top_answers_many(pairs, 3)):
            expected = as_list(reference(question=question, context=context, top_k=3))
            assert_same_answers([(a.text, a.score, a.start, a.end) for a in got], expected)
    assert "encoder: torch on cpu" in server.log.read_text()
