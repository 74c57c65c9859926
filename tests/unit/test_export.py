import json
import os
import socket
import subprocess
import sys

import pytest

from serving.export import (
    DEFAULT_MODEL,
    OPSET,
    ExportError,
    copy_repository,
    export,
    hub_offline,
    is_current,
    read_record,
)
from testkit.checkpoints import build_random_checkpoint
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    target = tmp_path_factory.mktemp("export") / "model_repository"
    return copy_repository(ROOT / "model_repository", target)


def test_export_writes_the_onnx_model_and_tokenizer_checked_against_pytorch(repository, tiny_checkpoint):
    record = export(str(tiny_checkpoint), repository)
    assert (repository / "encoder" / "1" / "model.onnx").stat().st_size > 1_000_000
    tokenizer = json.loads((repository / "tokenizer" / "1" / "tokenizer.json").read_text())
    assert tokenizer["normalizer"]["lowercase"] is True
    assert 0 <= record.max_abs_diff <= record.tolerance
    assert record.fused_operators["Attention"] == 2  # one fused attention per layer of the tiny model
    assert read_record(repository) == record
    assert record.family == "electra" and record.engines == ["onnxruntime", "openvino", "torch"]
    assert is_current(repository, str(tiny_checkpoint))
    # openvino (bf16) and torch run this same fp32 graph's export: nothing to export again; int8 is another graph
    assert is_current(repository, str(tiny_checkpoint), "openvino")
    assert is_current(repository, str(tiny_checkpoint), "auto", "bf16")
    assert is_current(repository, str(tiny_checkpoint), "torch")
    assert not is_current(repository, str(tiny_checkpoint), "onnxruntime", "int8")


def test_exported_onnx_has_dynamic_batch_and_sequence_axes(repository, tiny_checkpoint):
    import onnx

    if not is_current(repository, str(tiny_checkpoint)):
        export(str(tiny_checkpoint), repository)
    graph = onnx.load(str(repository / "encoder" / "1" / "model.onnx")).graph
    names = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in [*graph.input, *graph.output]}
    assert names == {
        name: ["batch", "sequence"]
        for name in ("input_ids", "attention_mask", "token_type_ids", "start_logits", "end_logits")
    }


def fp16_mask_graph(constant: float):
    """``(1 - mask) * constant``, the additive attention mask transformers builds, as an ONNX graph in fp16 (what
    an engine lowering the fp32 graph to fp16 runs), the constant held as a ``Constant`` node."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.float16))),
        helper.make_node("Constant", [], ["lowest"], value=numpy_helper.from_array(np.array(constant, np.float32))),
        helper.make_node("Cast", ["lowest"], ["lowest16"], to=TensorProto.FLOAT16),
        helper.make_node("Sub", ["one", "mask"], ["inverted"]),
        helper.make_node("Mul", ["inverted", "lowest16"], ["additive"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mask",
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT16, [None])],
        [helper.make_tensor_value_info("additive", TensorProto.FLOAT16, [None])],
    )
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def test_a_mask_constant_past_fp16s_range_is_nan_in_fp16_until_the_export_brings_it_in(tmp_path):
    """What an engine lowering a graph to fp16 does with float32's lowest (-3.4e38, transformers' mask value):
    infinity, and ``0 * -inf`` is NaN for every real token. ``fp16_safe_constants`` rewrites it to -65504."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from serving.export import fp16_safe_constants, fp16_unsafe_constants

    path = tmp_path / "mask.onnx"
    onnx.save(fp16_mask_graph(float(np.finfo(np.float32).min)), str(path))
    mask = np.array([1, 1, 0], np.float16)

    def masked():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"mask": mask})[0]

    assert np.isnan(masked()[:2]).all()
    assert [value for _, value in fp16_unsafe_constants(path)] == [pytest.approx(-3.4028235e38)]
    assert list(fp16_safe_constants(path).values()) == [pytest.approx(-3.4028235e38)]
    assert fp16_unsafe_constants(path) == []
    assert masked().tolist() == [0, 0, -65504]
    assert fp16_safe_constants(path) == {}  # nothing left to change: the file is not rewritten


@pytest.mark.parametrize("optimize", [True, False], ids=["fused", "unfused"])
def test_every_exported_graph_is_fp16_safe_with_the_pytorch_logits(tiny_checkpoint, tmp_path, optimize):
    """The unfused graph holds transformers' mask constant (the fused one folds it into its attention): both
    leave the export fp16-safe, checked against PyTorch on the rewritten graph."""
    from serving.export import fp16_unsafe_constants

    repository = copy_repository(ROOT / "model_repository", tmp_path / "model_repository")
    record = export(str(tiny_checkpoint), repository, optimize=optimize)
    assert fp16_unsafe_constants(repository / "encoder" / "1" / "model.onnx") == []
    assert record.max_abs_diff <= record.tolerance


def test_a_different_checkpoint_is_not_current(repository, tiny_checkpoint, tmp_path):
    other = build_random_checkpoint(tmp_path / "other", "tiny", seed=1)
    assert not is_current(repository, str(other))


def test_export_of_a_hub_id_offline_says_how_to_pass_a_local_directory(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    repository = copy_repository(ROOT / "model_repository", tmp_path / "repo")
    result = subprocess.run(
        [sys.executable, "-m", "serving.export", "--model", DEFAULT_MODEL, "--repository", str(repository)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert f"could not load '{DEFAULT_MODEL}' from the Hugging Face hub" in result.stderr
    assert "pass a local checkpoint directory" in result.stderr and "MODEL=/path/to/checkpoint" in result.stderr
    assert "make checkpoint SIZE=base" in result.stderr and "MODEL=checkpoints/electra-qa-base" in result.stderr


def test_export_refuses_a_path_that_is_not_a_checkpoint(tmp_path):
    copy_repository(ROOT / "model_repository", tmp_path / "repo")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.export",
            "--model",
            str(tmp_path / "missing"),
            "--repository",
            str(tmp_path / "repo"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "neither an existing directory nor a Hugging Face hub id" in result.stderr


@pytest.mark.parametrize("endpoint", ["default", "refused", "silent"])
def test_serving_a_hub_id_without_network_fails_at_once_with_the_message(tmp_path, monkeypatch, endpoint):
    """Without HF_HUB_OFFLINE: the unreachable hub is noticed once, not through half a minute of retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf")
    with socket.socket() as listener:
        # refused: a port nobody listens on; silent: a server that accepts connections and never answers
        listener.bind(("127.0.0.1", 0))
        if endpoint == "silent":
            listener.listen()
        if endpoint == "default":
            if not hub_offline():
                pytest.skip("the Hugging Face hub is reachable from here")
        else:
            env["HF_ENDPOINT"] = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "serving.serve", "--model", DEFAULT_MODEL, "--repository", str(tmp_path / "repo")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 2, result.stderr
    assert f"could not load '{DEFAULT_MODEL}' from the Hugging Face hub" in result.stderr
    assert "not reachable" in result.stderr and "MODEL=/path/to/checkpoint" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout and "Retrying" not in result.stderr


def test_an_engine_and_precision_that_do_not_go_together_are_refused_before_any_work(tmp_path):
    with pytest.raises(ExportError, match="engine openvino computes in bf16, not int8"):
        export("no-such-checkpoint", tmp_path, engine="openvino", precision="int8")
    with pytest.raises(ExportError, match="only the torch engine serves without one"):
        export("no-such-checkpoint", tmp_path, engine="onnxruntime", onnx=False)


def edited_checkpoint(tiny_checkpoint, out, **config):
    """A copy of the tiny checkpoint with ``config`` (keys of config.json) changed, and a conf.py that would
    stop the export if it ran."""
    import shutil

    shutil.copytree(tiny_checkpoint, out)
    path = out / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    (out / "conf.py").write_text("raise SystemExit('the checkpoint's own code ran')\n")
    return out


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"model_type": "electra-custom", "auto_map": {"AutoConfig": "conf.Config"}},
            "does not load: ValueError: The repository .* contains custom code",
        ),
        ({"vocab_size": 2_000_000_000}, "vocab_size is 2000000000; the served tokens carry ids below 16,777,216"),
        ({"hidden_size": 64, "num_attention_heads": 4}, r"does not load: RuntimeError: Error\(s\) in loading"),
    ],
    ids=["its own code", "a vocabulary past the packed ids", "weights of another shape"],
)
def test_a_checkpoint_that_cannot_be_served_is_refused_in_one_line_with_exit_status_2(
    tiny_checkpoint, tmp_path, config, message
):
    import re

    checkpoint = edited_checkpoint(tiny_checkpoint, tmp_path / "checkpoint", **config)
    repository = copy_repository(ROOT / "model_repository", tmp_path / "repository")
    result = subprocess.run(
        [sys.executable, "-m", "serving.export", "--model", str(checkpoint), "--repository", str(repository)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert re.search(message, line), line
    assert "Traceback" not in result.stdout + result.stderr and "own code ran" not in result.stderr


def test_exporting_into_a_directory_that_is_no_model_repository_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="is not a model repository"):
        export(str(tiny_checkpoint), tmp_path)
