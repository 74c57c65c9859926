import json
import os
import socket
import subprocess
import sys
import time

import pytest

from serving.checkpoints import build_random_checkpoint
from serving.export import DEFAULT_MODEL, ExportError, copy_repository, export, hub_offline, is_current, read_record
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    target = tmp_path_factory.mktemp("export") / "model_repository"
    return copy_repository(ROOT / "model_repository", target)


def test_export_writes_the_onnx_model_and_tokenizer_checked_against_pytorch(repository, tiny_checkpoint):
    record = export(str(tiny_checkpoint), repository)
    assert (repository / "electra" / "1" / "model.onnx").stat().st_size > 1_000_000
    tokenizer = json.loads((repository / "tokenizer" / "1" / "tokenizer.json").read_text())
    assert tokenizer["normalizer"]["lowercase"] is True
    assert 0 <= record.max_abs_diff <= record.tolerance
    assert record.fused_operators["Attention"] == 2  # one fused attention per layer of the tiny model
    assert read_record(repository) == record
    assert record.family == "electra" and record.engines == ["onnxruntime", "openvino", "torch"]
    assert is_current(repository, str(tiny_checkpoint))
    # openvino (bf16) and torch run this same fp32 graph's export: nothing to export again; int8 is another graph,
    # tensorrt's takes other inputs
    assert is_current(repository, str(tiny_checkpoint), "openvino")
    assert is_current(repository, str(tiny_checkpoint), "auto", "bf16")
    assert is_current(repository, str(tiny_checkpoint), "torch")
    assert not is_current(repository, str(tiny_checkpoint), "onnxruntime", "int8")
    assert not is_current(repository, str(tiny_checkpoint), "tensorrt")


def test_exported_onnx_has_dynamic_batch_and_sequence_axes(repository, tiny_checkpoint):
    import onnx

    if not is_current(repository, str(tiny_checkpoint)):
        export(str(tiny_checkpoint), repository)
    graph = onnx.load(str(repository / "electra" / "1" / "model.onnx")).graph
    names = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in [*graph.input, *graph.output]}
    assert names == {
        name: ["batch", "sequence"]
        for name in ("input_ids", "attention_mask", "token_type_ids", "start_logits", "end_logits")
    }


def test_the_tensorrt_engines_graph_takes_the_steps_packed_tokens_and_gives_the_same_logits(
    repository, tiny_checkpoint, tmp_path
):
    """The container's native backend gets the step's own tensors: ``tokens`` in (unpacked inside the graph),
    ``logits`` [B, L, 2] out, equal to the Python-backend graph's on the three standard inputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from runtime.tensors import pack_tokens

    if not is_current(repository, str(tiny_checkpoint)):
        export(str(tiny_checkpoint), repository)
    packed_repository = copy_repository(ROOT / "model_repository", tmp_path / "tensorrt")
    export(str(tiny_checkpoint), packed_repository, engine="tensorrt")
    packed_graph = packed_repository / "electra" / "1" / "model.onnx"
    graph = onnx.load(str(packed_graph)).graph
    names = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert names == {"tokens": ["batch", "sequence"]} and [o.name for o in graph.output] == ["logits"]

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30522, (3, 20))
    ids[:, 0], ids[:, 5] = 101, 102  # a literal [SEP] and [PAD] inside the text stay what they are
    ids[1, 3], ids[2, 12] = 102, 0
    mask = (np.arange(20) < np.array([[20], [14], [9]])).astype(np.int64)
    types = ((np.arange(20) > 5) & (mask == 1)).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    cpu = ["CPUExecutionProvider"]
    (logits,) = ort.InferenceSession(str(packed_graph), providers=cpu).run(
        None, {"tokens": pack_tokens(ids, mask, types)}
    )
    plain = ort.InferenceSession(str(repository / "electra" / "1" / "model.onnx"), providers=cpu)
    start, end = plain.run(
        ["start_logits", "end_logits"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    )
    real = mask == 1
    np.testing.assert_allclose(logits[..., 0][real], start[real], atol=1e-4)
    np.testing.assert_allclose(logits[..., 1][real], end[real], atol=1e-4)


def test_a_different_checkpoint_is_not_current(repository, tiny_checkpoint, tmp_path):
    other = build_random_checkpoint(tmp_path / "other", "tiny", seed=1)
    assert not is_current(repository, str(other))


def test_export_of_a_hub_id_offline_says_how_to_pass_a_local_directory(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [sys.executable, "-m", "serving.export", "--model", DEFAULT_MODEL, "--repository", str(tmp_path / "repo")],
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
def test_serving_a_hub_id_without_network_fails_fast_with_the_message(tmp_path, monkeypatch, endpoint):
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
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "serving.serve", "--model", DEFAULT_MODEL, "--repository", str(tmp_path / "repo")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert f"could not load '{DEFAULT_MODEL}' from the Hugging Face hub" in result.stderr
    assert "not reachable" in result.stderr and "MODEL=/path/to/checkpoint" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout and "Retrying" not in result.stderr
    assert elapsed < 10, elapsed


def test_an_engine_and_precision_that_do_not_go_together_are_refused_before_any_work(tmp_path):
    with pytest.raises(ExportError, match="engine openvino computes in bf16, not int8"):
        export("no-such-checkpoint", tmp_path, engine="openvino", precision="int8")
    with pytest.raises(ExportError, match="only the torch engine serves without one"):
        export("no-such-checkpoint", tmp_path, engine="onnxruntime", onnx=False)
