"""The checked-in model repository, parsed with Triton's own protobuf definitions."""

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import ROOT

REPOSITORY = ROOT / "model_repository"


def load(name: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse((REPOSITORY / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("name", ["electra_qa", "tokenizer", "electra", "decoder"])
def test_config_parses_and_is_named_after_its_directory(name):
    assert load(name).name == name
    assert (REPOSITORY / name / "1").is_dir()


def test_ensemble_io_contract():
    config = load("electra_qa")
    assert config.platform == "ensemble" and config.max_batch_size == 0
    types = model_config_pb2.DataType
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("question", types.Value("TYPE_STRING"), [-1]), ("context", types.Value("TYPE_STRING"), [-1])]
    assert [(o.name, o.data_type) for o in config.output] == [
        ("answer", types.Value("TYPE_STRING")), ("score", types.Value("TYPE_FP32")),
        ("start", types.Value("TYPE_INT64")), ("end", types.Value("TYPE_INT64"))]


def test_ensemble_steps_wire_existing_tensors_of_their_models():
    ensemble = load("electra_qa")
    available = {i.name for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = load(step.model_name)
        assert set(step.input_map) == {i.name for i in model.input}
        assert set(step.input_map.values()) <= available, step.model_name
        assert set(step.output_map) <= {o.name for o in model.output}
        available |= set(step.output_map.values())
    assert {o.name for o in ensemble.output} <= available


def test_model_step_batches_ragged_windows_dynamically():
    electra = load("electra")
    assert electra.max_batch_size > 0 and electra.HasField("dynamic_batching")
    assert all(i.allow_ragged_batch for i in electra.input)
    assert [i.name for i in electra.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in electra.output] == ["start_logits", "end_logits"]


def test_tokenizer_window_limit_fits_the_model_steps_batch():
    max_windows = int(load("tokenizer").parameters["max_windows"].string_value)
    assert max_windows <= load("electra").max_batch_size


@pytest.mark.parametrize("name", ["tokenizer", "electra", "decoder"])
def test_python_models_have_their_adapter(name):
    assert load(name).backend == "python"
    assert Path(REPOSITORY / name / "1" / "model.py").is_file()
