"""The model step on the torch engine (the GPU path's engine and config, ``make serve ENGINE=torch``, here on the
CPU in fp32: ``serving.configs.torch_engine_on_cpu``) answers as the reference pipeline does."""

import os

import pytest

from perf.cases import CASES
from serving.configs import torch_engine_on_cpu
from serving.export import copy_repository
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
    assert "electra: torch on cpu" in torch_server.log.read_text()
