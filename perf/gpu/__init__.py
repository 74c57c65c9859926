"""The GPU run's parts; ``perf/gpu_run.py`` is the command and says what the run does. ``machine``: versions and
the GPU's memory; ``served``: the ensemble under perf_analyzer; ``pipeline``: the card's pipeline in a process of
its own; ``report``: the table and the targets. What they share is here."""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
STEPS = ("tokenizer", "encoder", "decoder")
PAIRS = 200  # perf/data/squad.json holds squad_sized_pairs(200)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
