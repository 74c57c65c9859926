"""The GPU run: the served ensemble against the model card's pipeline on one GPU, in one command, printing as it
goes and one table last. ``make gpu-kit`` packs it with everything it needs (``bash run.sh`` there runs this in
the kit's environment); in a checkout with ``make setup`` done: ``python -m perf.gpu_run [--quick]``. This module
is the run's order (below) and its options; its parts are in ``perf/gpu/``: ``machine`` (versions, GPU memory),
``served`` (the server under perf_analyzer), ``pipeline`` (the card's pipeline), ``report`` (the table, targets).

1. the random-weight checkpoint of ``--size`` (``base``: the real model's shape, the default on a GPU; ``tiny``
   on the CPU fallback);
2. a copy of the model repository with the export's files but no ONNX graph (``serving.export``, ``onnx=False``):
   the checkpoint, ``tokenizer.json`` and ``export.json``;
3. the embedded server, ``serving.serve --no-export --engine torch`` (``configs/torch.pbtxt``: the torch engine in
   fp16 with CUDA graphs, 4 tokenizer and 4 decoder instances). When torch sees no GPU (or with ``--device cpu``),
   the CPU fallback: the same engine and config, fp32 on a CPU instance without CUDA graphs, the default pre/post
   configs (``serving.configs.torch_engine_on_cpu``);
4. the served answers to the parity check's questions (HTTP, one request each: all 200 SQuAD-sized pairs, 16
   with ``--quick`` on the CPU);
5. perf_analyzer (``perf.load_test.measure``) at each ``--concurrency`` on ``perf/data/squad.json`` (one
   SQuAD-sized question per request), then at concurrency 1 on ``perf/data/long.json`` (one 140,000-character
   document per request), with Triton's statistics before and after each run;
6. the server stopped, the card's pipeline (transformers 4.x, fp32, the same device, weights and inputs) in a
   process of its own: one question per call, then batched (``--batch-size``), each for ``--pipeline-seconds``.

The table: per setup, q/s, p50/p99 latency, the ratio to both forms of the pipeline, each step's share of server
time (queue + compute per request, Triton's statistics), requests per execute of each step (dynamic batching),
the model step's windows per second of its compute, and the GPU's memory in use (``nvidia-smi``, the peak while
that setup ran). Also the share of served answers equal to the pipeline's (the contract: >= 99 % on the GPU in
fp16, 100 % on the CPU in fp32) and the targets. Written to ``--out`` as ``gpu-run.md`` and ``gpu-run.json``,
with the server's and the pipeline's logs. A step that fails (the server's start, one perf_analyzer run, the
pipeline) is reported and the rest still runs; the exit status is then 1, as when a request failed or the parity
contract is not met.

perf_analyzer is the kit's (PyPI perf-analyzer, glibc >= 2.38); on an older system ``PERF_ANALYZER_GLIBC`` names
a newer glibc to run it with (``perf/install-perf-analyzer``'s ``PREFIX/glibc``), or ``PERF_ANALYZER`` another
binary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from perf.gpu import PAIRS, ROOT, log
from perf.gpu.machine import gpu_description, probe_environment
from perf.gpu.pipeline import pipeline_main, run_pipeline
from perf.gpu.report import PARITY_CONTRACT, pipeline_rows, render, targets
from perf.gpu.served import run_served

# -- the model and the repository --------------------------------------------------------------------------------


def prepare(work: Path, size: str, device: str, vocab: Path | None) -> tuple[Path, Path]:
    """(checkpoint, repository): the random-weight checkpoint (built once per size) and a fresh copy of the model
    repository with the export's files, without ONNX; on the CPU fallback the model step runs the torch engine."""
    from serving.checkpoints import build_random_checkpoint
    from serving.configs import torch_engine_on_cpu
    from serving.export import copy_repository, export

    checkpoint = work / f"checkpoint-{size}"
    if not (checkpoint / "config.json").is_file():
        log(f"building the random-weight {size} checkpoint in {checkpoint}")
        shutil.rmtree(checkpoint, ignore_errors=True)
        build_random_checkpoint(checkpoint, size, seed=0, vocab=vocab)
    repository = work / f"model_repository-{device}"
    shutil.rmtree(repository, ignore_errors=True)
    copy_repository(ROOT / "model_repository", repository)
    export(str(checkpoint), repository, engine="torch", onnx=False)
    if device == "cpu":
        torch_engine_on_cpu(repository)
    return checkpoint, repository


# -- the run -----------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows, fewer concurrencies (about a minute)")
    parser.add_argument(
        "--device",
        choices=("auto", "gpu", "cpu"),
        default="auto",
        help="auto: gpu when the NVIDIA driver shows one and torch can use it, else the CPU fallback",
    )
    parser.add_argument("--size", choices=("base", "tiny"), help="checkpoint (default: base on a GPU, tiny on CPU)")
    parser.add_argument("--out", type=Path, help="results (default: <kit>/results, or perf/results/gpu-run)")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        help="perf_analyzer concurrencies (default: 16 64 128 on a GPU, 1 4 on CPU; --quick: 16 64)",
    )
    parser.add_argument("--interval-ms", type=int, help="perf_analyzer window (default 4000, --quick 1000)")
    parser.add_argument(
        "--long-requests",
        type=int,
        help="documents per perf_analyzer window of the long-document run (default 10, --quick 3)",
    )
    parser.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows at most per run")
    parser.add_argument(
        "--stability-percentage",
        type=float,
        default=1000,
        help="perf_analyzer's bound on the variation between its last 3 windows (default: any, so "
        "that a run of a few short windows always completes; the table reports their average)",
    )
    parser.add_argument("--pipeline-seconds", type=float, help="per form of the pipeline (default 20, --quick 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="of the pipeline's batched form")
    parser.add_argument(
        "--parity-questions",
        type=int,
        help="questions compared with the pipeline (default: all "
        "200 of perf/data/squad.json; 16 with --quick on the CPU)",
    )
    parser.add_argument("--kit", type=Path, help="the kit folder (run.sh passes it): vocab.txt, kit.json")
    parser.add_argument("--work", type=Path, help="the kit's unpacked work directory (run.sh passes it)")
    return parser.parse_args(argv)


def choose_device(requested: str, environment: dict) -> tuple[str, str]:
    from serving.engines import gpu_visible

    if requested == "cpu":
        return "cpu", "--device cpu"
    usable = environment.get("cuda") is True  # torch's view: the model step's engine is torch
    if requested == "gpu" and not usable:
        raise SystemExit(
            "gpu_run: --device gpu, but torch sees no CUDA device"
            + ("" if gpu_visible() else " (and the NVIDIA driver shows no GPU)")
        )
    if usable:
        return "gpu", environment.get("gpu") or "GPU"
    return "cpu", "no GPU visible to torch: the CPU fallback"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pipeline"]:
        return pipeline_main(argv[1:])
    args = parse(argv)
    from perf.bench import machine_label
    from perf.inputs import squad_sized_pairs

    environment = probe_environment()
    device, why = choose_device(args.device, environment)
    size = args.size or ("base" if device == "gpu" else "tiny")
    quick = args.quick
    args.concurrency = args.concurrency or (
        [16, 64] if quick and device == "gpu" else [16, 64, 128] if device == "gpu" else [1, 4]
    )
    args.interval_ms = args.interval_ms or (1000 if quick else 4000)
    args.long_requests = args.long_requests or (3 if quick else 10)
    args.pipeline_seconds = args.pipeline_seconds or (3.0 if quick else 20.0)
    args.parity_questions = args.parity_questions or (16 if quick and device == "cpu" else PAIRS)
    args.out = (args.out or (args.kit / "results" if args.kit else ROOT / "perf" / "results" / "gpu-run")).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = (args.work or ROOT / ".cache" / "gpu-run").resolve()
    vocab = args.kit / "payload" / "vocab.txt" if args.kit else None

    log("environment: " + ", ".join(f"{k} {v}" for k, v in environment.items()))
    log(f"device: {device} ({why}); checkpoint: {size}; results: {args.out}")
    started = time.monotonic()
    checkpoint, repository = prepare(args.work, size, device, vocab)
    log(f"checkpoint and repository ready in {time.monotonic() - started:.0f} s")
    pairs = squad_sized_pairs(PAIRS)
    served = run_served(args, device, repository, pairs)
    pipeline = run_pipeline(args, device, checkpoint)
    one, batched = pipeline.get("one_per_call"), pipeline.get("batched")
    for row in pipeline_rows(one, batched, args.batch_size):
        log(f"{row['setup']}: {row['qps']:.1f} q/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms")

    expected = [tuple(a) for a in (one or {}).get("answers", [])]
    got = [tuple(a) for a in served.pop("answers")][: len(expected)]
    same = sum(g == e for g, e in zip(got, expected))
    parity = {
        "same": same,
        "compared": len(got),
        "share": same / len(got) if got else 0.0,
        "contract": PARITY_CONTRACT[device],
    }
    parity["met"] = bool(got) and parity["share"] >= parity["contract"]
    report = {
        "machine": machine_label(),
        "device": device,
        "device_detail": why,
        "gpu": gpu_description(),
        "engine": "torch fp16, CUDA graphs (configs/torch.pbtxt)"
        if device == "gpu"
        else "torch fp32 on CPU (configs/torch.pbtxt on a CPU instance)",
        "size": size,
        "quick": quick,
        "environment": environment,
        "batch_size": args.batch_size,
        "date": time.strftime("%Y-%m-%d"),
        "served": served,
        "pipeline": {
            "transformers": pipeline.get("transformers"),
            "one_per_call": _without_answers(one),
            "batched": _without_answers(batched),
        },
        "parity": parity,
    }
    report["targets"] = targets(report)
    markdown = render(report)
    (args.out / "gpu-run.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu-run.md").write_text(markdown)
    print("\n" + markdown, flush=True)
    log(f"done in {time.monotonic() - started:.0f} s; written: {args.out / 'gpu-run.md'}, {args.out / 'gpu-run.json'}")
    failures = sum(r["failures"] for r in served["rows"])
    if failures:
        print(f"{failures} requests failed on the server", file=sys.stderr)
    if one is None or batched is None:
        print("the pipeline did not run in full (see its logs)", file=sys.stderr)
    return 0 if not failures and not served["errors"] and parity["met"] and one and batched else 1


def _without_answers(result: dict | None) -> dict | None:
    return None if result is None else {k: v for k, v in result.items() if k != "answers"}


if __name__ == "__main__":
    sys.exit(main())
