"""What this CPU is and which matrix units it has, from ``/proc/cpuinfo``: named beside every CPU figure and in
the bf16 engine's refusal on a CPU without them."""

from __future__ import annotations

import platform
from pathlib import Path

# the flags that decide how fast reduced-precision matrix products run, as /proc/cpuinfo names them
MATRIX_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni")


def _cpuinfo(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def cpu_model(path: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``platform.processor()`` where /proc/cpuinfo has none)."""
    for line in _cpuinfo(path).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def matrix_units(path: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """Of ``MATRIX_FLAGS``, those this CPU has."""
    for line in _cpuinfo(path).splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return tuple(flag for flag in MATRIX_FLAGS if flag in flags)
    return ()


def describe(path: Path = Path("/proc/cpuinfo")) -> str:
    """``<model> (<matrix units>)``, e.g. ``Intel(R) Xeon(R) ... (amx_bf16, amx_int8, avx512_bf16, avx512_vnni)``."""
    return f"{cpu_model(path)} ({', '.join(matrix_units(path)) or 'no bf16/int8 matrix units'})"
