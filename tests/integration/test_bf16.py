"""``make serve ENGINE=openvino``: the model step on OpenVINO in bf16 (encoder/configs/openvino.pbtxt). On a CPU with
bf16 matrix units it answers at least 97 % of SQuAD-sized questions and the edge cases as the fp32 pipeline does,
on a random-weight checkpoint of the real model's layer width (two layers: bf16's rounding at the real width; the
stand-in's near-tied spans make this a lower bound for a fine-tuned model); on a CPU without them the server
refuses to start, naming the CPU and its flags."""

import pytest

from runtime.cpu import describe
from runtime.openvino_runner import bf16_units
from serving.export import copy_repository
from testkit.cases import CASES
from testkit.checkpoints import build_random_checkpoint
from testkit.inputs import squad_sized_pairs
from tests.conftest import ROOT
from tests.integration.conftest import launch, stop, wait_ready

pytest.importorskip("openvino")
BF16_UNITS = bf16_units()
MIN_SAME_ANSWERS = 0.97


@pytest.fixture(scope="module")
def shallow_checkpoint(tmp_path_factory):
    return build_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "electra-qa-shallow", "shallow", seed=0)


@pytest.fixture(scope="module")
def bf16_server(tmp_path_factory, shallow_checkpoint, triton_server):
    workdir = tmp_path_factory.mktemp("bf16")
    repository = copy_repository(ROOT / "model_repository", workdir / "model_repository")
    server = launch(workdir, shallow_checkpoint, repository, wait=False, engine="openvino")
    yield server
    stop(server.process)


@pytest.mark.skipif(not BF16_UNITS, reason="this CPU has no bf16 matrix units (the refusal is tested instead)")
def test_bf16_answers_as_the_fp32_pipeline_mostly(bf16_server, shallow_checkpoint):
    from transformers import pipeline

    from client import TritonQA

    wait_ready(bf16_server)
    reference = pipeline("question-answering", model=str(shallow_checkpoint), tokenizer=str(shallow_checkpoint))
    pairs = squad_sized_pairs(200) + list(CASES.values())
    with TritonQA(bf16_server.grpc_url, timeout_s=60) as qa:
        got = [qa.ask(question, context) for question, context in pairs]
    expected = [reference(question=q, context=c) for q, c in pairs]
    same = [(a.text, a.start, a.end) == (e["answer"], e["start"], e["end"]) for a, e in zip(got, expected)]
    assert sum(same) / len(same) >= MIN_SAME_ANSWERS, f"{sum(same)} of {len(same)} answers as the fp32 pipeline's"
    assert "encoder: openvino on cpu, bf16" in bf16_server.log.read_text()


@pytest.mark.skipif(BF16_UNITS, reason="this CPU has bf16 matrix units (its answers are tested instead)")
def test_bf16_is_refused_at_start_on_a_cpu_without_bf16_units(bf16_server):
    assert bf16_server.process.wait(timeout=300) != 0
    log = bf16_server.log.read_text()
    assert "precision bf16 needs a CPU with bf16 matrix units" in log and describe() in log
