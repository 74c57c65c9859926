"""The checked-in model repository, parsed with Triton's own protobuf definitions."""

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from client import ENSEMBLE
from tests.conftest import ROOT

REPOSITORY = ROOT / "model_repository"


def load(name: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse((REPOSITORY / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("name", [ENSEMBLE, "tokenizer", "encoder", "decoder"])
def test_config_parses_and_is_named_after_its_directory(name):
    assert load(name).name == name
    assert (REPOSITORY / name / "1").is_dir()


def test_ensemble_io_contract():
    config = load(ENSEMBLE)
    assert config.platform == "ensemble" and config.max_batch_size == 0
    types = model_config_pb2.DataType
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("question", types.Value("TYPE_STRING"), [-1]),
        ("context", types.Value("TYPE_STRING"), [-1]),
    ]
    assert [(o.name, o.data_type) for o in config.output] == [
        ("answer", types.Value("TYPE_STRING")),
        ("score", types.Value("TYPE_FP32")),
        ("start", types.Value("TYPE_INT64")),
        ("end", types.Value("TYPE_INT64")),
    ]


def test_ensemble_steps_wire_existing_tensors_of_their_models():
    ensemble = load(ENSEMBLE)
    available = {i.name for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = load(step.model_name)
        assert set(step.input_map) == {i.name for i in model.input}
        assert set(step.input_map.values()) <= available, step.model_name
        assert set(step.output_map) <= {o.name for o in model.output}
        available |= set(step.output_map.values())
    assert {o.name for o in ensemble.output} <= available


def test_model_step_batches_ragged_windows_dynamically():
    encoder = load("encoder")
    assert encoder.max_batch_size > 0 and encoder.HasField("dynamic_batching")
    assert all(i.allow_ragged_batch for i in encoder.input)
    assert [i.name for i in encoder.input] == ["tokens"]
    assert [o.name for o in encoder.output] == ["logits"]


def test_tokenizer_window_limit_fits_the_model_steps_batch():
    max_windows = int(load("tokenizer").parameters["max_windows"].string_value)
    assert max_windows <= load("encoder").max_batch_size


@pytest.mark.parametrize("name", ["tokenizer", "encoder", "decoder"])
def test_python_models_have_their_adapter(name):
    assert load(name).backend == "python"
    assert Path(REPOSITORY / name / "1" / "model.py").is_file()


# The configs are plain checked-in files: config.pbtxt (the onnxruntime engine's, the default) and each engine's
# configs/<engine>.pbtxt variants that tritonserver --model-config-name=<engine> picks (make serve ENGINE=<engine>,
# docker compose, the k8s overlays). These tests hold them together.
VARIANT_NAMES = sorted({p.stem for p in REPOSITORY.glob("*/configs/*.pbtxt")})


def load_variant(name: str, variant: str) -> model_config_pb2.ModelConfig:
    """The config tritonserver --model-config-name=<variant> loads for ``name`` (its own, else config.pbtxt)."""
    path = REPOSITORY / name / "configs" / f"{variant}.pbtxt"
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig()) if path.is_file() else load(name)


def io(config: model_config_pb2.ModelConfig) -> list:
    return [[(t.name, t.data_type, list(t.dims)) for t in tensors] for tensors in (config.input, config.output)]


@pytest.mark.parametrize("variant", VARIANT_NAMES)
@pytest.mark.parametrize("name", ["tokenizer", "encoder", "decoder"])
def test_every_variant_keeps_its_models_io_contract(name, variant):
    config = load_variant(name, variant)
    assert config.name == name and io(config) == io(load(name))


@pytest.mark.parametrize("variant", ["default", *VARIANT_NAMES])
def test_windows_per_request_fit_every_batch_they_go_into(variant):
    models = {
        m: load_variant(m, variant) if variant != "default" else load(m) for m in ("tokenizer", "encoder", "decoder")
    }
    max_windows = int(models["tokenizer"].parameters["max_windows"].string_value)
    assert max_windows <= models["encoder"].max_batch_size and max_windows <= models["decoder"].max_batch_size


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_tokenizer_and_decoder_variants_differ_only_in_instances_and_windows(variant):
    for name in ("tokenizer", "decoder"):
        config, default = load_variant(name, variant), load(name)
        for c in (config, default):
            c.ClearField("instance_group")
            c.parameters.pop("max_windows", None)
        assert config == default, f"{name}/configs/{variant}.pbtxt"


@pytest.mark.parametrize("variant", ["default", *VARIANT_NAMES])
def test_decoder_limits_load_from_every_variant_and_allow_every_span_of_a_window(variant):
    from preprocessing import DecoderLimits

    def parameters(name):
        config = load_variant(name, variant) if variant != "default" else load(name)
        return {key: value.string_value for key, value in config.parameters.items()}

    limits = DecoderLimits.from_config(parameters("decoder"), parameters("tokenizer"))
    assert limits.max_answer_len >= limits.max_seq_len  # a span never exceeds a window: any length stays allowed


def test_model_step_variants_read_the_files_the_export_writes():
    from runtime.engines import ENGINES

    default = load("encoder").parameters
    for variant in VARIANT_NAMES:
        config = load_variant("encoder", variant)
        if config.backend == "python":
            assert config.parameters["engine"].string_value in ENGINES
            for key in ("onnx_file", "checkpoint_dir"):
                assert config.parameters[key] == default[key]
        else:  # Triton's own onnxruntime backend
            assert config.default_model_filename == default["onnx_file"].string_value


def test_the_files_the_export_writes_are_ignored_by_git():
    import subprocess

    from serving.export import ExportedFiles

    for path in ExportedFiles.of(REPOSITORY).paths():
        assert subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT).returncode == 0, path


def test_tensor_names_in_code_are_the_configs():
    from client._protocol import INPUT_NAMES, OUTPUT_NAMES
    from runtime import tensors

    dtype = {
        model_config_pb2.DataType.Value(f"TYPE_{t}"): n
        for t, n in (("INT64", "int64"), ("INT32", "int32"), ("FP32", "float32"), ("STRING", "object"))
    }
    ensemble, tokenizer, encoder, decoder = (load(m) for m in (ENSEMBLE, "tokenizer", "encoder", "decoder"))
    assert (tuple(i.name for i in ensemble.input), tuple(o.name for o in ensemble.output)) == (
        INPUT_NAMES,
        OUTPUT_NAMES,
    )
    assert {o.name: dtype[o.data_type] for o in tokenizer.output} == {
        name: np.dtype(t).name for name, t in tensors.WINDOW_TENSORS.items()
    }
    assert tuple(i.name for i in encoder.input) == tensors.MODEL_INPUTS
    assert tuple(o.name for o in encoder.output) == tensors.MODEL_OUTPUTS
    assert [(i.name, dtype[i.data_type], len(i.dims) + 1) for i in decoder.input] == [
        (name, np.dtype(t).name, rank) for name, t, rank in tensors.DECODER_INPUTS
    ]
    assert tuple(o.name for o in decoder.output) == tensors.ANSWER_OUTPUTS == OUTPUT_NAMES


@pytest.mark.parametrize("variant", ["default", *VARIANT_NAMES])
def test_the_python_steps_configs_hold_exactly_the_parameters_their_models_read(variant):
    # a missing or unknown one fails the model's loading (runtime.backend.checked_parameters)
    from preprocessing import DECODER_PARAMETERS, TOKENIZER_PARAMETERS
    from runtime.engines import PARAMETERS

    for name, known in (("tokenizer", TOKENIZER_PARAMETERS), ("encoder", PARAMETERS), ("decoder", DECODER_PARAMETERS)):
        path = REPOSITORY / name / "configs" / f"{variant}.pbtxt"
        if variant != "default" and not path.is_file():
            continue
        config = load_variant(name, variant) if variant != "default" else load(name)
        if config.backend == "python":
            assert sorted(config.parameters) == sorted(known), f"{name} {variant}"
