"""The GPU run: the served ensemble against the model card's pipeline on one GPU, in one command, printing as it
goes and one table last. ``make gpu-kit`` packs it with everything it needs (``bash run.sh`` there runs this in
the kit's environment); in a checkout with ``make setup`` done: ``python -m perf.gpu_run [--quick]``.

1. the random-weight checkpoint of ``--size`` (``base``: the real model's shape, the default on a GPU; ``tiny``
   on the CPU fallback);
2. a copy of the model repository with the export's files but no ONNX graph (``serving.export``, ``onnx=False``):
   the checkpoint, ``tokenizer.json`` and ``export.json``;
3. the embedded server, ``serving.serve --no-export --device gpu`` (``configs/gpu.pbtxt``: the torch engine in
   fp16 with CUDA graphs, 4 tokenizer and 4 decoder instances). When torch sees no GPU (or with ``--device cpu``),
   the CPU fallback: the default configs with the model step on the same torch engine, fp32 on the CPU;
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
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENSEMBLE = "electra_qa"
STEPS = ("tokenizer", "electra", "decoder")
PAIRS = 200  # perf/data/squad.json holds squad_sized_pairs(200)
PARITY_CONTRACT = {"gpu": 0.99, "cpu": 1.0}
# the GPU targets: model step windows/s (fp16), q/s with p99 <= 100 ms, x the pipeline (per call, batched),
# pre+post share of server time, seconds for the 140,000-character document
TARGETS = {
    "windows_per_s": 10_000,
    "qps": 6_000,
    "p99_ms": 100,
    "x_pipeline": 60,
    "x_batched": 14,
    "pre_post_share": 0.10,
    "long_s": 0.25,
}
_ENGINE = re.compile(r'(\{\s*key:\s*"engine"\s*value:\s*\{\s*string_value:\s*")[^"]*("\s*\}\s*\})')


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the machine ------------------------------------------------------------------------------------------------

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


# -- the model and the repository --------------------------------------------------------------------------------


def prepare(work: Path, size: str, device: str, vocab: Path | None) -> tuple[Path, Path]:
    """(checkpoint, repository): the random-weight checkpoint (built once per size) and a fresh copy of the model
    repository with the export's files, without ONNX; on the CPU fallback the model step runs the torch engine."""
    from serving.checkpoints import build_random_checkpoint
    from serving.export import copy_repository, export

    checkpoint = work / f"checkpoint-{size}"
    if not (checkpoint / "config.json").is_file():
        log(f"building the random-weight {size} checkpoint in {checkpoint}")
        shutil.rmtree(checkpoint, ignore_errors=True)
        build_random_checkpoint(checkpoint, size, seed=0, vocab=vocab)
    repository = work / f"model_repository-{device}"
    shutil.rmtree(repository, ignore_errors=True)
    copy_repository(ROOT / "model_repository", repository)
    export(str(checkpoint), repository, onnx=False)
    if device == "cpu":
        use_torch_engine(repository)
    return checkpoint, repository


def use_torch_engine(repository: Path) -> None:
    """The default (CPU) config of the model step, on the torch engine instead of ONNX Runtime."""
    config = repository / "electra" / "config.pbtxt"
    text, found = _ENGINE.subn(r"\1torch\2", config.read_text())
    if found != 1:
        raise SystemExit(f"gpu_run: {config} has no single engine parameter to set")
    config.write_text(text)


# -- the served ensemble -----------------------------------------------------------------------------------------


def served_answers(http_url: str, pairs: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """The served (answer, start, end) of each pair, one request each (Triton's HTTP/JSON protocol)."""
    answers = []
    for question, context in pairs:
        body = {
            "inputs": [
                {"name": "question", "shape": [1], "datatype": "BYTES", "data": [question]},
                {"name": "context", "shape": [1], "datatype": "BYTES", "data": [context]},
            ],
            "outputs": [{"name": name} for name in ("answer", "start", "end")],
        }
        request = urllib.request.Request(
            f"{http_url}/v2/models/{ENSEMBLE}/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            outputs = {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
        answers.append((outputs["answer"][0], int(outputs["start"][0]), int(outputs["end"][0])))
    return answers


def perf_analyzer_binary(work: Path | None) -> str:
    """The kit's perf_analyzer when the system's loader runs it (glibc >= 2.38); else through the loader and
    libraries in PERF_ANALYZER_GLIBC (perf/install-perf-analyzer's PREFIX/glibc); else PERF_ANALYZER or the
    checkout's own (perf.load_test.find_perf_analyzer)."""
    from perf.load_test import find_perf_analyzer

    binary = work / "perf_analyzer" / "perf_analyzer" / "bin" / "perf_analyzer" if work else None
    if binary is None or not binary.is_file():
        return find_perf_analyzer()
    check = ["bash", str(ROOT / "perf" / "install-perf-analyzer"), "--glibc-ok", str(binary)]
    if subprocess.run(check).returncode == 0:
        return str(binary)
    glibc = os.environ.get("PERF_ANALYZER_GLIBC")
    if glibc:
        lib = Path(glibc) / "usr" / "lib" / "x86_64-linux-gnu"
        wrapper = work / "bin" / "perf_analyzer"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(
            f'#!/bin/sh\nexec "{lib}/ld-linux-x86-64.so.2" --library-path '
            f'"{lib}:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "{binary}" "$@"\n'
        )
        wrapper.chmod(0o755)
        return str(wrapper)
    if os.environ.get("PERF_ANALYZER"):
        return os.environ["PERF_ANALYZER"]
    raise SystemExit(
        f"gpu_run: {binary} needs glibc >= 2.38; set PERF_ANALYZER_GLIBC (a Debian 13 libc unpacked, "
        "see perf/install-perf-analyzer) or PERF_ANALYZER"
    )


def served_row(
    setup: str,
    row: dict,
    breakdown: list[dict],
    gpu_mib: int | None,
    kind: str = "questions",
    cpu_us: dict[str, float] | None = None,
) -> dict:
    """A table row from perf_analyzer's CSV row and load_test's per-step breakdown."""
    per_step = {b["model"]: b for b in breakdown}
    time_us = {
        s: sum(per_step[s][f"{p}_us"] for p in ("queue", "compute_input", "compute_infer", "compute_output"))
        for s in STEPS
    }
    total = sum(time_us.values()) or 1.0
    return {
        "setup": setup,
        "kind": kind,
        "qps": float(row["Inferences/Second"]),
        "p50_ms": int(row["p50 latency"]) / 1000,
        "p99_ms": int(row["p99 latency"]) / 1000,
        "share": {s: time_us[s] / total for s in STEPS},
        "requests_per_execute": {s: per_step[s]["requests_per_execution"] for s in STEPS},
        "windows_per_s": per_step["electra"]["inferences_per_compute_s"],
        "gpu_mib": gpu_mib,
        "cpu_us": cpu_us or {},
        "successes": int(row["Server Successes"]),
        "failures": int(row["Server Failures"]),
        "perf_analyzer": row,
        "steps": breakdown,
    }


def run_served(args, device: str, repository: Path, pairs: list[tuple[str, str]]) -> dict:
    """Start the server, answer the parity questions, run perf_analyzer at each concurrency and on the long
    document, stop the server. A server that does not start, or a perf_analyzer run that fails, is reported (with
    the end of its output) and the run goes on: ``errors`` lists what failed."""
    from perf.bench import Server
    from perf.load_test import PerfAnalyzerError, composing_models, measure
    from perf.process_cpu import server_processes
    from serving.admin import grpc_headers, local_admin_key

    result = {"startup_s": None, "startup_gpu_mib": None, "rows": [], "answers": [], "errors": []}
    perf_analyzer = perf_analyzer_binary(args.work)
    ports = free_port(), free_port(), free_port()
    server_log = args.out / "server.log"
    configs = (
        "configs/gpu.pbtxt: torch fp16, CUDA graphs"
        if device == "gpu"
        else "CPU fallback: default configs, torch engine in fp32"
    )
    log(f"starting the server ({configs}; log: {server_log})")
    started = time.monotonic()
    try:
        with GpuMemory(device == "gpu") as memory:
            server = Server(repository, *ports, server_log, ("--device", device, "--address", "127.0.0.1"))
    except RuntimeError as error:
        tail = "\n".join(server_log.read_text(errors="replace").splitlines()[-40:]) if server_log.is_file() else ""
        log(f"{error}; its last lines:\n{tail}")
        result["errors"].append(f"server: {error}")
        return result
    result.update(startup_s=time.monotonic() - started, startup_gpu_mib=memory.peak)
    log(f"server ready in {result['startup_s']:.0f} s" + (f"; GPU memory {memory.peak} MiB" if memory.peak else ""))
    try:
        started = time.monotonic()
        try:
            result["answers"] = served_answers(server.http, pairs[: args.parity_questions])
            log(f"{len(result['answers'])} parity questions answered in {time.monotonic() - started:.1f} s")
        except (OSError, ValueError, KeyError) as error:  # an HTTP error status is an OSError
            log(f"the parity questions failed: {error}")
            result["errors"].append(f"parity questions: {error}")
        headers = grpc_headers(local_admin_key(server.grpc))
        steps = composing_models(server.admin, ENSEMBLE)
        runs = [
            (f"served, concurrency {c}", c, ROOT / "perf" / "data" / "squad.json", None, "questions")
            for c in args.concurrency
        ]
        runs.append(
            (
                "served, 140,000-character document, concurrency 1",
                1,
                ROOT / "perf" / "data" / "long.json",
                args.long_requests,
                "documents",
            )
        )
        for setup, concurrency, data, request_count, kind in runs:
            try:
                with GpuMemory(device == "gpu") as memory:
                    row, breakdown, cpu_us = measure(
                        perf_analyzer,
                        server.admin,
                        headers,
                        server.grpc,
                        ENSEMBLE,
                        data,
                        concurrency,
                        args.interval_ms,
                        args.max_trials,
                        args.stability_percentage,
                        steps,
                        args.out / f"perf-c{concurrency}-{kind}.csv",
                        request_count,
                        processes=server_processes(int(server.grpc.rsplit(":", 1)[1])),
                    )
            except PerfAnalyzerError as error:
                log(f"{setup}: {error}")
                result["errors"].append(f"{setup}: perf_analyzer exited with {error.returncode}")
                continue
            result["rows"].append(served_row(setup, row, breakdown, memory.peak, kind, cpu_us))
            log(render_row(result["rows"][-1], None, None))
    finally:
        server.stop()
    return result


# -- the pipeline ------------------------------------------------------------------------------------------------


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
    from perf.inputs import squad_sized_pairs

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


# -- the table ---------------------------------------------------------------------------------------------------

COLUMNS = (
    "setup",
    "q/s",
    "p50 ms",
    "p99 ms",
    "x pipeline (1/call)",
    "x pipeline (batched)",
    "tokenizer / electra / decoder share",
    "req/execute tok / electra / dec",
    "electra windows/s",
    "CPU us/request: tritonserver / tokenizer / electra / decoder",
    "GPU memory MiB",
)


def cpu_cell(cpu_us: dict[str, float] | None) -> str:
    """CPU us per request of tritonserver and of each step (its instances summed), from ``perf.process_cpu``."""
    from perf.process_cpu import Process

    if not cpu_us:
        return ""
    per: dict[str, float] = {}
    for name, us in cpu_us.items():
        model = Process(0, name).model
        per[model] = per.get(model, 0.0) + us
    return " / ".join(f"{per.get(s, 0):.0f}" for s in ("tritonserver", *STEPS))


def render_row(row: dict, one: dict | None, batched: dict | None) -> str:
    def ratio(reference: dict | None) -> str:
        if reference is None:
            return ""
        if row.get("kind") == "documents":  # the document's time, the pipeline's over the server's
            return f"{reference['long_s'] / (row['p50_ms'] / 1000):.1f}" if "long_s" in reference else ""
        return f"{row['qps'] / reference['throughput_qps']:.1f}"

    cells = [
        row["setup"],
        f"{row['qps']:.1f}",
        f"{row['p50_ms']:.1f}",
        f"{row['p99_ms']:.1f}",
        ratio(one),
        ratio(batched),
        " / ".join(f"{row['share'][s]:.0%}" for s in STEPS) if "share" in row else "",
        " / ".join(f"{row['requests_per_execute'][s]:.1f}" for s in STEPS) if "share" in row else "",
        f"{row['windows_per_s']:.0f}" if "windows_per_s" in row else "",
        cpu_cell(row.get("cpu_us")),
        "n/a" if row.get("gpu_mib") is None else str(row["gpu_mib"]),
    ]
    return " | ".join(cells)


def pipeline_rows(one: dict | None, batched: dict | None, batch_size: int) -> list[dict]:
    rows = []
    if one:
        rows.append({**one, "setup": "pipeline, one question per call (fp32)", "qps": one["throughput_qps"]})
    if batched:
        rows.append(
            {
                **batched,
                "setup": f"pipeline, batch_size={batch_size} (fp32; latency per call of {batch_size} questions)",
                "qps": batched["throughput_qps"],
            }
        )
    return rows


def render(report: dict) -> str:
    one, batched = report["pipeline"].get("one_per_call"), report["pipeline"].get("batched")
    rows = pipeline_rows(one, batched, report["batch_size"])
    lines = [
        f"Machine: {report['machine']}; device: {report['device']} ({report['engine']}); checkpoint: "
        f"{report['size']} random weights; {report['date']}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows + report["served"]["rows"]:
        lines.append("| " + render_row(row, one, batched) + " |")
    parity = report["parity"]
    lines += [
        "",
        "q/s of the document row: documents per second; its x pipeline: the pipeline's time for the same "
        "document over the served p50. Shares: queue + compute per request of each step (Triton's statistics); "
        "electra windows/s: windows per second of the model step's own compute; CPU us/request: each server "
        "process's CPU time over the run (/proc) per answered request, a step's instances summed.",
        "",
        f"Same answers as the pipeline (text, start, end; one question per call): {parity['same']}/"
        f"{parity['compared']} ({parity['share']:.1%}); contract >= {parity['contract']:.0%} on this device: "
        f"{'met' if parity['met'] else 'NOT met'}.",
        "Server start-up (models loaded and warmed up, CUDA graphs captured on the GPU): "
        + (
            f"{report['served']['startup_s']:.0f} s."
            if report["served"]["startup_s"] is not None
            else "the server did not start."
        ),
    ]
    if report["served"].get("errors"):
        lines += ["", "Failed:"] + [f"- {e}" for e in report["served"]["errors"]]
    if report["targets"]:
        lines += ["", "Targets (on the GPU):"] + [f"- {t}" for t in report["targets"]]
    return "\n".join(lines) + "\n"


def targets(report: dict) -> list[str]:
    """Each GPU target, measured value and whether it is met (empty off the GPU: the targets are the GPU's)."""
    if report["device"] != "gpu":
        return []
    served = [r for r in report["served"]["rows"] if r["kind"] == "questions"]
    long_rows = [r for r in report["served"]["rows"] if r["kind"] == "documents"]
    one, batched = report["pipeline"].get("one_per_call"), report["pipeline"].get("batched")
    within = [r for r in served if r["p99_ms"] <= TARGETS["p99_ms"]]
    best = max(within, key=lambda r: r["qps"]) if within else None
    out = []

    def check(label: str, value: float | None, goal: float, higher: bool = True, fmt: str = "{:.0f}") -> None:
        if value is None:
            out.append(f"{label}: not measured")
            return
        met = value >= goal if higher else value <= goal
        out.append(
            f"{label}: {fmt.format(value)} ({'>=' if higher else '<='} {fmt.format(goal)}: "
            f"{'met' if met else 'NOT met'})"
        )

    check(
        "model step windows/s (fp16, best run)",
        max((r["windows_per_s"] for r in served), default=None),
        TARGETS["windows_per_s"],
    )
    check("questions/s with p99 <= 100 ms", best["qps"] if best else None, TARGETS["qps"])
    check(
        "x the pipeline, one question per call",
        best["qps"] / one["throughput_qps"] if best and one else None,
        TARGETS["x_pipeline"],
        fmt="{:.1f}",
    )
    check(
        "x the pipeline, batched",
        best["qps"] / batched["throughput_qps"] if best and batched else None,
        TARGETS["x_batched"],
        fmt="{:.1f}",
    )
    check(
        "tokenizer + decoder share of server time (worst run)",
        max((r["share"]["tokenizer"] + r["share"]["decoder"] for r in served), default=None),
        TARGETS["pre_post_share"],
        higher=False,
        fmt="{:.1%}",
    )
    check(
        "140,000-character document, seconds (p50)",
        long_rows[0]["p50_ms"] / 1000 if long_rows else None,
        TARGETS["long_s"],
        higher=False,
        fmt="{:.3f}",
    )
    return out


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
    from serving.serve import gpu_visible

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
        "engine": "torch fp16, CUDA graphs (configs/gpu.pbtxt)"
        if device == "gpu"
        else "torch fp32 on CPU (default configs, engine torch)",
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
