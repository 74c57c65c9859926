"""The model step's engines: the one table (``ENGINES``) that the model step, the export and the tools read.
``ENGINE`` is the one word that chooses one, the same in ``make serve`` / ``make export``, ``serving.serve
--engine``, ``serving.export --engine``, docker compose's ``ENGINE``, the k8s overlays (``deploy/k8s/overlays/
<engine>``) and the config variant files (``model_repository/encoder/configs/<engine>.pbtxt``, which tritonserver
takes as ``--model-config-name=<engine>``); ``PRECISION`` beside it says what the engine computes in. ONNX Runtime
runs the exported graph (the CPU default, exact parity), OpenVINO the same graph (bf16 on CPUs with bf16 matrix
units), PyTorch the exported checkpoint (fp16, fused attention and length buckets on a GPU). All run in Triton's
Python backend and take the same windows and give the same logits (``make_runner``)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.scheduling import Budget
from runtime.tensors import pack_tokens


@dataclass(frozen=True)
class Engine:
    name: str
    hardware: str  # cpu or gpu
    precisions: tuple[str, ...]  # what PRECISION may be with it; the first is its default
    summary: str


ENGINES = {
    engine.name: engine
    for engine in (
        Engine("onnxruntime", "cpu", ("fp32", "int8"), "ONNX Runtime on the CPU (exact parity in fp32)"),
        Engine("openvino", "cpu", ("bf16",), "OpenVINO in bf16 on the CPU's bf16 matrix units"),
        Engine("torch", "gpu", ("fp16",), "PyTorch fp16 on a GPU, CUDA graphs per (batch, length) bucket"),
    )
}
PRECISIONS = tuple(dict.fromkeys(p for engine in ENGINES.values() for p in engine.precisions))

# the encoder config's parameters, every one required (runtime.backend.checked_parameters)
PARAMETERS = (
    "engine",
    "onnx_file",
    "checkpoint_dir",
    "device",
    "precision",
    "intra_op_threads",
    "max_windows_per_run",
    "max_tokens_per_run",
    "length_bucket",
    "cuda_graphs",
    "batch_budget_ms",
    "max_request_ms",
)


def graph_precision(precision: str) -> str:
    """The precision of the ONNX graph exported for ``precision``: int8 is its own graph; the others run the fp32
    graph (OpenVINO lowers it itself; torch reads the checkpoint instead)."""
    return "int8" if precision == "int8" else "fp32"


def make_runner(parameters: Mapping[str, str], version_dir: Path, max_seq_len: int, device_id: str | None = None):
    """The runner that ``parameters`` (the encoder config's) name, on the device Triton gave the instance, for
    windows of at most ``max_seq_len`` tokens (the tokenizer's)."""
    engine = parameters["engine"]
    device = parameters["device"]
    if engine == "onnxruntime":
        from runtime.onnx_runner import OnnxQARunner

        return OnnxQARunner(
            version_dir / parameters["onnx_file"],
            device=device,
            intra_op_threads=int(parameters["intra_op_threads"]),
            max_windows_per_run=int(parameters["max_windows_per_run"]),
        )
    if engine == "openvino":
        from runtime.openvino_runner import OpenVinoQARunner

        if device != "cpu":
            raise ValueError(f"engine openvino runs on the CPU (device cpu), got device {device!r}")
        return OpenVinoQARunner(
            version_dir / parameters["onnx_file"],
            precision=parameters["precision"],
            intra_op_threads=int(parameters["intra_op_threads"]),
            max_windows_per_run=int(parameters["max_windows_per_run"]),
        )
    if engine == "torch":
        from runtime.torch_runner import TorchQARunner

        if device == "cuda" and device_id is not None:
            device = f"cuda:{device_id}"  # the GPU of this instance (instance_group KIND_GPU)
        runner = TorchQARunner(
            version_dir / parameters["checkpoint_dir"],
            device=device,
            precision=parameters["precision"],
            intra_op_threads=int(parameters["intra_op_threads"]),
            max_windows_per_run=int(parameters["max_windows_per_run"]),
            max_tokens_per_run=int(parameters["max_tokens_per_run"]),
            length_bucket=int(parameters["length_bucket"]),
            cuda_graphs=int(parameters["cuda_graphs"]),
            graph_max_length=max_seq_len,
        )
        runner.warmup()  # kernels initialised and every CUDA graph captured before the first request
        return runner
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def step_budget(parameters: Mapping[str, str], runner, max_seq_len: int) -> Budget | None:
    """The model step's time budget from its config: ``batch_budget_ms`` per execute, ``max_request_ms`` per
    request (0: none; None when both are 0), in a request's real tokens (its windows' attention: what the engines
    run). The step's pace is measured before the first request (``measure_pace``, full windows of the tokenizer's
    ``max_seq_len`` tokens, the costliest per token), so that the very first request over the limit is refused
    too; it is learned on from every execute, within its bounds (``Budget.anchor``)."""
    batch_ms, request_ms = int(parameters["batch_budget_ms"]), int(parameters["max_request_ms"])
    if not batch_ms and not request_ms:
        return None
    budget = Budget(batch_ms / 1000 if batch_ms else math.inf, min_work=1000, request_seconds=request_ms / 1000 or None)
    budget.anchor("tokens", *measure_pace(runner, int(parameters["max_windows_per_run"]), max_seq_len))
    return budget


def measure_pace(runner, windows: int, width: int) -> tuple[int, float]:
    """(tokens, seconds) of one run of ``windows`` windows of ``width`` tokens: the faster of two, after a first
    run that warms the engine up (the other steps load on the same cores meanwhile)."""
    ones = np.ones((windows, width), dtype=np.int64)
    batch = [pack_tokens(ones, ones, np.zeros_like(ones))]
    runner.run(batch)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        runner.run(batch)
        times.append(time.perf_counter() - started)
    return windows * width, min(times)
