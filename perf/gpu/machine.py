"""The GPU run's machine: the versions the server and the pipeline see, whether torch sees a GPU, and the
GPU's memory in use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

PROBE = """
import json, sys
info = {"python": sys.version.split()[0]}
for name in ("numpy", "tokenizers", "transformers", "torch", "safetensors"):
    try:
        module = __import__(name)
        info[name] = module.__version__
    except Exception as error:
        info[name] = f"missing ({error.__class__.__name__}: {error})"
try:
    import torch
    info["cuda"] = torch.cuda.is_available()
    info["torch_cuda"] = torch.version.cuda
    info["gpu"] = torch.cuda.get_device_name(0) if info["cuda"] else None
    info["capability"] = list(torch.cuda.get_device_capability(0)) if info["cuda"] else None
    info["arch_list"] = torch.cuda.get_arch_list() if info["cuda"] else []
except Exception as error:
    info["cuda"] = False
print(json.dumps(info))
"""


def probe_environment() -> dict:
    """Versions as the server and the pipeline will see them, and whether torch sees a GPU (in a process of its own:
    this one stays off the GPU)."""
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"gpu_run: the environment does not start: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


class GpuMemory:
    """The peak of the GPU's memory in use (``nvidia-smi``, MiB) while the ``with`` block runs; None without
    nvidia-smi."""

    def __init__(self, enabled: bool, interval_s: float = 0.25):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.interval_s, self.peak = interval_s, None
        self._stop = threading.Event()

    @staticmethod
    def read() -> int | None:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            return int(out.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def _sample(self) -> None:
        while not self._stop.is_set():
            used = self.read()
            if used is not None:
                self.peak = max(self.peak or 0, used)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GpuMemory:
        if self.enabled:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()


def gpu_description() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader", "-i", "0"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out or None
