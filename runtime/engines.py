"""The model step's engine, as its config.pbtxt chooses it: ONNX Runtime on the exported graph (the CPU
default, exact parity), or PyTorch on the exported checkpoint (fp16, fused attention and length buckets on a
GPU). Both take the same windows and give the same logits (``run``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ENGINES = ("onnxruntime", "torch")


def make_runner(parameters: Mapping[str, str], version_dir: Path, device_id: str | None = None):
    """The runner that ``parameters`` (the electra config's) name, on the device Triton gave the instance."""
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
            cuda_graphs=parameters["cuda_graphs"] == "true",
        )
        runner.warmup()  # kernels initialised and CUDA graphs captured before the first request
        return runner
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
