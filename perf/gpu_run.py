"""The GPU run: the served ensemble against the model card's pipeline on one GPU, in one command, printing as it
goes and one table last. ``make gpu-kit`` packs it with everything it needs (``bash run.sh`` there runs this in
the kit's environment); in a checkout with ``make setup`` done: ``python -m perf.gpu_run [--quick]``. This module
is the run's order (below) and its options; its parts are in ``perf/gpu/``: ``machine`` (versions, GPU memory),
``served`` (the server under perf_analyzer), ``checks`` (preflight, memory, re-export, restart behind the front),
``pipeline`` (the card's pipeline), ``report`` (the table, targets).

0. the preflight: the GPU, its driver and compute capability, torch and its CUDA, whether torch has kernels for
   the GPU (as the model step checks at load), the kit's packages; a GPU run stops here when one is missing;
1. the random-weight checkpoint of ``--size`` (``base``: the real model's shape, the default on a GPU; ``tiny``
   on the CPU fallback);
2. a copy of the model repository with the export's files but no ONNX graph (``serving.export``, ``onnx=False``):
   the checkpoint, ``tokenizer.json`` and ``export.json``;
3. the embedded server, ``serving.serve --no-export --engine torch`` (``configs/torch.pbtxt``: the torch engine in
   fp16 with CUDA graphs, 4 tokenizer and 4 decoder instances: the model step and configs docker compose's GPU
   service and the torch overlay run). When torch sees no GPU (or with ``--device cpu``), the CPU fallback: the
   same engine and config, fp32 on a CPU instance, the default pre/post configs
   (``serving.configs.torch_engine_on_cpu``);
4. the served answers to the parity check's questions (HTTP, one request each: all 200 SQuAD-sized pairs, 16
   with ``--quick`` on the CPU); a question the model step refuses for non-finite logits counts as not the same;
5. perf_analyzer (``perf.load_test.measure``) at each ``--concurrency`` on ``perf/data/squad.json`` (one
   SQuAD-sized question per request), then at concurrency 1 on ``perf/data/long.json`` (one 140,000-character
   document per request), with Triton's statistics before and after each run and the server's memory after it;
6. a re-export: another random checkpoint of the size exported into the repository, the server started on it, its
   answers to the first 16 parity questions, which must differ from the first checkpoint's;
7. tritonserver behind the front: the server on the front's upstream ports with nginx and the project's
   nginx.conf in front (where nginx is installed), perf_analyzer through the front, tritonserver killed, the
   supervisor restarting it, perf_analyzer through the same front again;
8. the server stopped, the card's pipeline (transformers 4.x, fp32, the same device, weights and inputs) in a
   process of its own: one question per call, then batched (``--batch-size``), each for ``--pipeline-seconds``.

The table: per setup, q/s, p50/p99 latency, the ratio to both forms of the pipeline, each step's share of server
time (queue + compute per request, Triton's statistics), requests per execute of each step (dynamic batching),
the model step's windows per second of its compute, and the GPU's memory in use (``nvidia-smi``, the peak while
that setup ran). Also the share of served answers equal to the pipeline's (the contract: >= 99 % on the GPU in
fp16, 100 % on the CPU in fp32), the questions refused for non-finite logits, the re-export and restart checks,
the largest private memory of tritonserver and of each step's stubs (what the liveness bound must allow), the
autoscaling target it implies (70 % of the best windows/s of a run within the p99 goal), and the targets. Written
to ``--out`` as ``gpu-run.md`` and ``gpu-run.json``, with the server's and the pipeline's logs. A step that fails
(the server's start, one perf_analyzer run, the pipeline) is reported and the rest still runs; the exit status is
then 1, as when a request failed, the parity contract is not met or a check failed; 2 when the preflight fails.

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
from perf.gpu.checks import front_restart, preflight, reexport
from perf.gpu.machine import gpu_description, probe_environment
from perf.gpu.pipeline import pipeline_main, run_pipeline
from perf.gpu.report import PARITY_CONTRACT, pipeline_rows, render, targets
from perf.gpu.served import perf_analyzer_binary, run_served, server_starter

# -- the model and the repository --------------------------------------------------------------------------------


def prepare(work: Path, size: str, device: str, vocab: Path | None) -> tuple[Path, Path]:
    """(checkpoint, repository): the random-weight checkpoint (built once per size) and a fresh copy of the model
    repository with the export's files, without ONNX; on the CPU fallback the model step runs the torch engine."""
    from serving.configs import torch_engine_on_cpu
    from serving.export import copy_repository, export
    from testkit.checkpoints import build_random_checkpoint

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
        help="perf_analyzer concurrencies (default: 16 64 256 on a GPU, 1 4 on CPU; --quick: 16 64)",
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
    parser.add_argument(
        "--reexport-questions", type=int, default=16, help="parity questions asked again after the re-export"
    )
    parser.add_argument("--no-front", action="store_true", help="skip the restart behind the front (nginx)")
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
    from testkit.inputs import squad_sized_pairs

    environment = probe_environment()
    device, why = choose_device(args.device, environment)
    checked = preflight(environment, device)
    log("preflight: " + ", ".join(f"{k} {v}" for k, v in checked.items() if k != "problems" and v))
    if checked["problems"]:
        print("gpu_run: the preflight failed: " + "; ".join(checked["problems"]), file=sys.stderr)
        return 2
    size = args.size or ("base" if device == "gpu" else "tiny")
    quick = args.quick
    args.concurrency = args.concurrency or (
        [16, 64] if quick and device == "gpu" else [16, 64, 256] if device == "gpu" else [1, 4]
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
    start_server = server_starter(args, repository)
    served = run_served(args, device, start_server, pairs)
    first = served["answers"][: args.reexport_questions]
    reexported = reexport(args, args.work, repository, size, vocab, start_server, first) if first else {"met": False}
    log(f"re-export: {reexported}")
    front = (
        {"ran": False, "why": "--no-front"}
        if args.no_front
        else front_restart(args, repository, start_server, perf_analyzer_binary(args.work))
    )
    log(f"restart behind the front: {front}")
    pipeline = run_pipeline(args, device, checkpoint)
    one, batched = pipeline.get("one_per_call"), pipeline.get("batched")
    for row in pipeline_rows(one, batched, args.batch_size):
        log(f"{row['setup']}: {row['qps']:.1f} q/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms")

    expected = [tuple(a) for a in (one or {}).get("answers", [])]
    got = [a if isinstance(a, str) else tuple(a) for a in served.pop("answers")][: len(expected)]
    same = sum(g == e for g, e in zip(got, expected))
    parity = {
        "same": same,
        "compared": len(got),
        "share": same / len(got) if got else 0.0,
        "contract": PARITY_CONTRACT[device],
        "non_finite": sum(isinstance(g, str) and "non-finite logits" in g for g in got),
        "errors": sum(isinstance(g, str) for g in got),
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
        "preflight": checked,
        "reexport": reexported,
        "front": front,
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
    checks_met = reexported["met"] and (front["met"] if front["ran"] else True)
    return 0 if not failures and not served["errors"] and parity["met"] and checks_met and one and batched else 1


def _without_answers(result: dict | None) -> dict | None:
    return None if result is None else {k: v for k, v in result.items() if k != "answers"}


if __name__ == "__main__":
    sys.exit(main())
