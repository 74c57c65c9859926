"""The model step on the torch engine (the GPU path's engine and config, ``make serve ENGINE=torch``, here on the
CPU in fp32: ``serving.configs.torch_engine_on_cpu``) answers as the reference pipeline does."""

import os

import pytest

from serving.configs import torch_engine_on_cpu
from serving.export import copy_repository
from testkit.cases import CASES
from tests.conftest import ROOT, as_list, assert_same_answers
from tests.integration.conftest import launch, stop

# the torch engine needs PyTorch where the server runs: .venv has it, a server-only environment of another
# Python (make test PYTHON=...) does not
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("SERVER_PYTHON")), reason="the server's environment of another Python has no PyTorch"
)


@pytest.fixture(scope="module")
def torch_server(tmp_path_factory, tiny_checkpoint, triton_server):
    workdir = tmp_path_factory.mktemp("torch-engine")
    repository = copy_repository(ROOT / "model_repository", workdir / "model_repository")
    torch_engine_on_cpu(repository)
    server = launch(workdir, tiny_checkpoint, repository, engine="torch")
    yield server
    stop(server.process)


@pytest.mark.parametrize("top_k", [1, 3])
def test_torch_engine_answers_like_the_reference_pipeline(torch_server, reference, top_k):
    from client import TritonQA

    with TritonQA(torch_server.grpc_url, timeout_s=60) as qa:
        for question, context in CASES.values():
            got = qa.top_answers(question, context, top_k)
            expected = as_list(reference(question=question, context=context, top_k=top_k))
            assert_same_answers([(a.text, a.score, a.start, a.end) for a in got], expected)
    assert "encoder: torch on cpu" in torch_server.log.read_text()


def test_non_finite_logits_fail_the_request_with_the_reason_instead_of_an_answer(tmp_path_factory, tiny_checkpoint):
    """A checkpoint whose logits are NaN (as an fp16 overflow or broken weights would make them) is served on the
    torch engine: every question gets INTERNAL saying why, none an answer made from them."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from client import ServerError, TritonQA
    from serving.export import export

    workdir = tmp_path_factory.mktemp("torch-engine-nan")
    broken = workdir / "checkpoint"
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        model.qa_outputs.bias[0] = float("nan")  # every start logit
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_checkpoint).save_pretrained(broken)
    repository = copy_repository(ROOT / "model_repository", workdir / "model_repository")
    export(str(broken), repository, engine="torch", onnx=False)  # the ONNX check would refuse NaN logits
    torch_engine_on_cpu(repository)
    server = launch(workdir, broken, repository, serve_args="--no-export", engine="torch")
    try:
        with TritonQA(server.grpc_url, timeout_s=60) as qa:
            for question, context in (CASES["squad"], CASES["long"]):
                with pytest.raises(ServerError, match="non-finite logits"):
                    qa.ask(question, context)
        assert "encoder: the model step computed non-finite logits" in server.log.read_text()
        assert server.alive()
    finally:
        stop(server.process)
