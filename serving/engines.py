"""Choosing an engine of the table (runtime.engines.ENGINES) from the words a user gives: ``auto`` or a name,
and a precision. docs/serving.md has the table of which to use where; tests hold it to the config files."""

from __future__ import annotations

from pathlib import Path

from runtime.engines import ENGINES, Engine


class EngineChoiceError(ValueError):
    """An engine or precision that does not exist, or a pair that does not go together."""


def gpu_visible() -> bool:
    """Whether the NVIDIA driver shows a GPU here (what ``auto`` goes by)."""
    return any(Path("/proc/driver/nvidia/gpus").glob("*"))


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
