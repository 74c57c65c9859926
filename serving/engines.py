"""The model step's engines: ``ENGINE`` is the one word that chooses it, the same in ``make serve`` / ``make
export``, ``serving.serve --engine``, ``serving.export --engine``, docker compose's ``ENGINE``, the k8s overlays
(``deploy/k8s/overlays/<engine>``) and the config variant files (``model_repository/encoder/configs/<engine>.pbtxt``,
which tritonserver takes as ``--model-config-name=<engine>``). ``PRECISION`` beside it says what the engine
computes in. Every engine runs in Triton's Python backend, so the embedded server (make serve), the image (docker
compose, the k8s overlays) and the GPU run start the same code. docs/serving.md has the table of which to use
where; tests hold this one to the config files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


class EngineChoiceError(ValueError):
    """An engine or precision that does not exist, or a pair that does not go together."""


def gpu_visible() -> bool:
    """Whether the NVIDIA driver shows a GPU here (what ``auto`` goes by)."""
    return any(Path("/proc/driver/nvidia/gpus").glob("*"))


def graph_precision(precision: str) -> str:
    """The precision of the ONNX graph exported for ``precision``: int8 is its own graph; the others run the fp32
    graph (OpenVINO lowers it itself; torch reads the checkpoint instead)."""
    return "int8" if precision == "int8" else "fp32"


def choose(engine: str, precision: str | None = None, gpu: bool | None = None) -> tuple[Engine, str]:
    """(engine, precision) for the words given: ``engine`` ``auto`` is torch when ``gpu`` (default: an NVIDIA GPU
    is visible here), else the first CPU engine that computes in ``precision`` (onnxruntime for fp32 and int8, openvino
    for bf16); ``precision`` None or empty is the engine's default."""
    if engine == "auto":
        gpu = gpu_visible() if gpu is None else gpu
        candidates = [e for e in ENGINES.values() if (e.hardware == "gpu") == gpu]
        if precision:
            candidates = [e for e in candidates if precision in e.precisions] or [
                e for e in ENGINES.values() if precision in e.precisions
            ]
        if not candidates:
            raise EngineChoiceError(f"no engine computes in {precision}; {described()}")
        chosen = candidates[0]
    elif engine in ENGINES:
        chosen = ENGINES[engine]
    else:
        raise EngineChoiceError(f"engine must be auto or one of {', '.join(ENGINES)}, got {engine!r}")
    precision = precision or chosen.precisions[0]
    if precision not in chosen.precisions:
        raise EngineChoiceError(
            f"engine {chosen.name} computes in {' or '.join(chosen.precisions)}, not {precision}; {described()}"
        )
    return chosen, precision


def described() -> str:
    """Every engine with its precisions, for messages and help."""
    return "engines: " + "; ".join(f"{e.name} ({e.hardware}: {', '.join(e.precisions)})" for e in ENGINES.values())
