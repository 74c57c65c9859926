"""The GPU run's pipeline: the card's pipeline in a process of its own (``python -m perf.gpu_run pipeline``), one
question per call, then batched."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from perf.gpu import PAIRS, ROOT, log
from perf.gpu.machine import GpuMemory


def run_pipeline(args, device: str, checkpoint: Path) -> dict:
    """The card's pipeline in a process of its own (``pipeline`` below), both forms: {form: result}, without the
    forms that did not complete (see its log)."""
    out = args.out / "pipeline.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "perf.gpu_run",
        "pipeline",
        "--checkpoint",
        str(checkpoint),
        "--device",
        "0" if device == "gpu" else "-1",
        "--seconds",
        str(args.pipeline_seconds),
        "--batch-size",
        str(args.batch_size),
        "--parity",
        str(args.parity_questions),
        "--out",
        str(out),
    ]
    if not args.quick:
        command.append("--with-long")
    log(f"the card's pipeline, one question per call then batched (log: {args.out / 'pipeline.log'})")
    with open(args.out / "pipeline.log", "w") as log_file:
        status = subprocess.run(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT).returncode
    if status != 0:
        log(f"the pipeline failed with status {status}: see {args.out / 'pipeline.log'}")
    return json.loads(out.read_text()) if out.is_file() else {}


def pipeline_main(argv: list[str]) -> int:
    """``python -m perf.gpu_run pipeline ...``: the card's pipeline one question per call, then batched; results as
    JSON (written after each form), with the GPU's memory in use at its peak during each."""
    from perf.bench import bench_pipeline
    from testkit.inputs import squad_sized_pairs

    parser = argparse.ArgumentParser(prog="perf.gpu_run pipeline")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--device", type=int, default=-1)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--parity", type=int, default=0, help="answer at least this many pairs (one per call)")
    parser.add_argument("--with-long", action="store_true", help="and the 140,000-character document, one call")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import transformers

    pairs = squad_sized_pairs(PAIRS)
    results = {"transformers": transformers.__version__}
    for form, batch_size in (("one_per_call", None), ("batched", args.batch_size)):
        with GpuMemory(args.device >= 0) as memory:
            result = bench_pipeline(
                args.checkpoint,
                pairs,
                args.seconds,
                args.with_long and batch_size is None,
                device=args.device,
                batch_size=batch_size,
                min_questions=args.parity if batch_size is None else 0,
            )
        result["answers"] = result["answers"][: args.parity] if batch_size is None else []
        results[form] = {**result, "gpu_mib": memory.peak}
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"pipeline, {form}: {result['throughput_qps']:.1f} q/s over {result['questions']} questions", flush=True)
    return 0
