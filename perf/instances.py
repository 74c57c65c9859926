"""``make instances``: how many instances of each Python-backend step a host needs, from measured CPU costs.

    python -m perf.instances --cpu perf/results/perf-cpu.csv --cores 16 [--rate 9000] [--concurrency 32]

Reads what ``make perf`` measured (``<out>-cpu.csv``: CPU microseconds per answered request of tritonserver and
of each step's stub) and works out, for a host of ``--cores`` cores:

- each step's share of a core per request/s: ``us_per_request / 1e6``; a Python-backend instance is one process
  that runs its ``execute`` on one core at a time (the GIL), so a step needs
  ``ceil(rate * us_per_request / 1e6 / utilisation)`` instances to answer ``rate`` requests/s;
- the rate the host sustains with every core busy at ``utilisation``: ``cores * utilisation * 1e6 / sum(us)``
  (tritonserver's own threads included; the model step's instance count follows its device, not this).

It prints the ``instance_group [ { count: N ... } ]`` to write in each step's config (``model_repository/<step>/
config.pbtxt``, or ``configs/<engine>.pbtxt`` for ``make serve ENGINE=<engine>``). Measure on the host itself, or
one of the same CPU: costs per request differ between CPUs (BENCHMARKS.md names each one). ``--gpu``: the host
feeds a GPU, so the model step's CPU measured on a CPU (its compute) is left out; on the GPU that step's CPU is
its host work, which the GPU run measures.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from perf.process_cpu import Process

# a core kept this busy leaves room for bursts and the kernel's own work
UTILISATION = 0.8
STEPS = ("tokenizer", "decoder")  # the Python-backend steps on the CPU whose instances scale with the host


def costs(path: Path, concurrency: int | None = None) -> dict[str, float]:
    """CPU us per request of each process kind (tritonserver, each model summed over its instances) at
    ``concurrency`` (default: the highest measured)."""
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["process"] not in ("outside the model step", "all")]
    level = concurrency or max(int(r["concurrency"]) for r in rows)
    per: dict[str, float] = {}
    for r in rows:
        if int(r["concurrency"]) == level:
            model = Process(0, r["process"]).model
            per[model] = per.get(model, 0.0) + float(r["cpu_us_per_request"])
    if not per:
        raise SystemExit(f"{path} holds no row at concurrency {level}")
    return per


MODEL_STEP = "encoder"


def plan(
    per_request_us: dict[str, float],
    cores: int,
    rate: float | None,
    utilisation: float = UTILISATION,
    gpu: bool = False,
) -> dict:
    """The sustainable rate on ``cores`` cores and, at ``rate`` (default: that rate), instances per step; ``gpu``:
    without the model step's CPU (its compute runs on the GPU)."""
    if gpu:
        per_request_us = {k: v for k, v in per_request_us.items() if k != MODEL_STEP}
    total = sum(per_request_us.values())
    sustainable = cores * utilisation * 1e6 / total
    target = rate or sustainable
    instances = {
        step: max(1, math.ceil(target * per_request_us[step] / 1e6 / utilisation))
        for step in STEPS
        if step in per_request_us
    }
    cores_needed = target * total / 1e6 / utilisation
    return {"sustainable_rate": sustainable, "rate": target, "cores_needed": cores_needed, "instances": instances}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=Path, default=Path("perf/results/perf-cpu.csv"), help="make perf's CPU table")
    parser.add_argument("--cores", type=int, required=True, help="cores of the host that will serve")
    parser.add_argument("--rate", type=float, help="requests/s to plan for (default: what the cores sustain)")
    parser.add_argument("--concurrency", type=int, help="the measured level to read (default: the highest)")
    parser.add_argument(
        "--gpu", action="store_true", help="the host feeds a GPU: leave the model step's CPU (measured on a CPU) out"
    )
    args = parser.parse_args(argv)
    if not args.cpu.is_file():
        parser.error(f"no {args.cpu}: run make perf against a server on this kind of host first")
    per = costs(args.cpu, args.concurrency)
    result = plan(per, args.cores, args.rate, gpu=args.gpu)
    print("CPU us per request: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(per.items())))
    if args.gpu:
        print(f"the model step's {per.get(MODEL_STEP, 0):.0f} us left out: its compute runs on the GPU")
    print(
        f"{args.cores} cores at {UTILISATION:.0%} sustain ~{result['sustainable_rate']:,.0f} requests/s; "
        f"{result['rate']:,.0f} requests/s need ~{result['cores_needed']:.1f} cores"
    )
    for step, count in result["instances"].items():
        print(f"  model_repository/{step}/config.pbtxt: instance_group [ {{ count: {count} kind: KIND_CPU }} ]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
