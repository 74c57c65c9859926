"""One word chooses the model step: ``ENGINE`` (``serving.engines``), with ``PRECISION`` beside it. ``auto`` is
torch where a GPU is visible and otherwise the CPU engine that computes in the precision asked for; every engine
names its own config file (``--model-config-name=<engine>``), which exists, and says the engine and precision the
table says; a pair that does not go together is refused naming every engine's precisions."""

import re
from argparse import Namespace

import pytest

from runtime.backend import config_file_parameters
from runtime.engines import ENGINES
from serving.engines import EngineChoiceError, choose
from serving.export import ExportRecord
from serving.serve import ServerSetupError, chosen_engine, engine_for
from tests.conftest import ROOT

REPOSITORY = ROOT / "model_repository"


def chosen(engine, precision=None, gpu=False):
    found, precision = choose(engine, precision, gpu=gpu)
    return found.name, precision


def test_auto_is_onnxruntime_fp32_on_a_cpu_and_torch_fp16_on_a_gpu():
    assert chosen("auto") == ("onnxruntime", "fp32")
    assert chosen("auto", gpu=True) == ("torch", "fp16")


def test_auto_takes_the_cpu_engine_of_the_precision_asked_for():
    assert chosen("auto", "int8") == ("onnxruntime", "int8")
    assert chosen("auto", "bf16") == ("openvino", "bf16")
    assert chosen("auto", "bf16", gpu=True) == ("openvino", "bf16")  # no GPU engine computes in bf16


def test_an_engine_named_computes_in_its_default_unless_told():
    assert chosen("openvino") == ("openvino", "bf16")
    assert chosen("onnxruntime", "int8") == ("onnxruntime", "int8")
    assert chosen("torch") == ("torch", "fp16")


def test_a_pair_that_does_not_go_together_is_refused_naming_every_engines_precisions():
    with pytest.raises(EngineChoiceError, match=r"engine torch computes in fp16, not int8; .*onnxruntime \(cpu: fp32"):
        choose("torch", "int8")
    with pytest.raises(
        EngineChoiceError, match="engine must be auto or one of onnxruntime, openvino, torch, got 'cuda'"
    ):
        choose("cuda")


def serve_args(engine="auto", precision=None, tritonserver_args=()):
    return Namespace(engine=engine, precision=precision, tritonserver_args=list(tritonserver_args))


def test_make_serve_runs_every_engine_and_refuses_a_config_name_of_its_own():
    assert chosen_engine(serve_args("openvino")) == ("openvino", "bf16")
    assert chosen_engine(serve_args("torch")) == ("torch", "fp16")  # the image's GPU engine too
    with pytest.raises(ServerSetupError, match="not tritonserver's --model-config-name"):
        chosen_engine(serve_args("auto", None, ["--model-config-name=mine"]))


def record(engines, unrunnable, family="albert") -> ExportRecord:
    """An export's record that says which engines run it, and why the others do not."""
    return ExportRecord("m", "f", 0.0, 1e-3, 17, "now", {}, family=family, engines=engines, unrunnable=unrunnable)


def test_an_engine_the_export_does_not_run_on_is_refused_saying_why_and_auto_falls_back():
    why = "the torch engine's encoder does not reproduce this checkpoint: hidden_act='relu' is not supported"
    albert = record(["onnxruntime", "openvino"], {"torch": why})
    assert engine_for(albert, "openvino", "bf16", auto=False) == ("openvino", "bf16", None)
    refused = f"{why} (albert); serve it with ENGINE=onnxruntime or ENGINE=openvino"
    with pytest.raises(ServerSetupError, match=re.escape(refused)):
        engine_for(albert, "torch", "fp16", auto=False)
    # auto chose torch (a GPU is visible): ONNX Runtime instead, saying why
    assert engine_for(albert, "torch", "fp16", auto=True) == ("onnxruntime", "fp32", f"{why} (albert)")
    # exported for the torch engine only: nothing to fall back on
    no_graph = record(["torch"], {"onnxruntime": "no graph", "openvino": "no graph"}, "electra")
    with pytest.raises(ServerSetupError, match=r"no graph \(electra\); serve it with ENGINE=torch"):
        engine_for(no_graph, "onnxruntime", "fp32", auto=True)
    assert engine_for(None, "openvino", "bf16", auto=False) == ("openvino", "bf16", None)  # not exported yet


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_names_a_config_file_of_the_model_step_that_says_so(engine):
    config = REPOSITORY / "encoder" / "configs" / f"{engine}.pbtxt"
    assert config.is_file(), f"--model-config-name={engine} would fall back to config.pbtxt"
    assert 'backend: "python"' in config.read_text()
    parameters = config_file_parameters(config)
    assert parameters["engine"] == engine
    assert parameters["precision"] in (*ENGINES[engine].precisions, "auto")


def test_configs_name_only_engines_of_the_table():
    for variant in REPOSITORY.glob("*/configs/*.pbtxt"):
        assert variant.stem in ENGINES, variant


def test_the_default_config_is_the_onnxruntime_engines():
    assert (REPOSITORY / "encoder" / "configs" / "onnxruntime.pbtxt").resolve() == (
        REPOSITORY / "encoder" / "config.pbtxt"
    ).resolve()
