"""``make perf``: a perf_analyzer concurrency sweep against ``electra_qa`` over gRPC.

For each concurrency it runs Triton's perf_analyzer with the checked-in inputs (``perf/data``), reads
Triton's statistics before and after (HTTP, with the admin key) to break server time down per composing model,
and finally writes

    <out>.csv             perf_analyzer's verbose CSV, one row per concurrency
    <out>-breakdown.csv   per composing model and concurrency: queue / compute input / infer / output (us)
    <out>.png             throughput vs p99 latency
    <out>-cpu.csv         per concurrency: CPU microseconds per answered request of tritonserver and of each
                          Python-backend stub (when the server runs on this machine), beside the bare tokenizer
                          library's microseconds per pair on the same pairs (one core), and their ratios

and prints a short table last. The run fails when any request failed. A server started with
``--api-key HEADER=VALUE`` is measured with ``--api-key HEADER=VALUE`` (default: $ELECTRA_QA_API_KEY), which
perf_analyzer sends as the gRPC header ``triton-grpc-protocol-<HEADER>``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from client.names import DEFAULT_URL, ENSEMBLE
from perf import prepost, process_cpu
from serving.admin import AdminClient, add_api_key_option, grpc_headers, local_admin_key, parse_header
from testkit.servers import settled

ROOT = Path(__file__).resolve().parent.parent
# the processes of the serving stack outside the model step (tritonserver and the pre/post-processing steps)
OUTSIDE_MODEL_STEP = ("tritonserver", "tokenizer", "decoder")
# pairs per bare tokenizer call: about what the tokenizer step receives per execute at concurrency 32
BARE_BATCH = 32
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def find_perf_analyzer() -> str:
    for candidate in (
        os.environ.get("PERF_ANALYZER"),
        str(ROOT / ".perf-analyzer" / "bin" / "perf_analyzer"),
        shutil.which("perf_analyzer"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit(
        "perf_analyzer not found: run `make perf-analyzer`, set PERF_ANALYZER, or use the compose "
        "`sdk` service (see docs/deploy.md)"
    )


def statistics(admin: AdminClient) -> dict[str, dict]:
    """Cumulative counts and times of the ensemble and each composing model."""
    return {s["name"]: s for s in admin.call("/v2/models/stats")["model_stats"]}


def settled_statistics(admin: AdminClient) -> dict[str, dict]:
    """Statistics once they stop changing (``testkit.servers.settled``): right after perf_analyzer returns, its
    last requests may not be counted in every model yet."""
    return settled(lambda: statistics(admin), quiet_s=0.5)


def delta(after: dict, before: dict, name: str) -> dict:
    a, b = after[name]["inference_stats"], before.get(name, {}).get("inference_stats", {})
    row = {}
    for key in ("success", "fail") + PHASES:
        row[f"{key}_count"] = int(a.get(key, {}).get("count", 0)) - int(b.get(key, {}).get("count", 0))
        row[f"{key}_ns"] = int(a.get(key, {}).get("ns", 0)) - int(b.get(key, {}).get("ns", 0))
    for key in ("execution_count", "inference_count"):  # executes, and batch elements (windows for most steps)
        row[key] = int(after[name].get(key, 0)) - int(before.get(name, {}).get(key, 0))
    # the per-request phases above charge a batched execution to each of its requests; batch_stats count each
    # execution once: the step's real compute time
    row["execution_ns"] = _batch_compute_ns(after[name]) - _batch_compute_ns(before.get(name, {}))
    return row


def _batch_compute_ns(model_stats: dict) -> int:
    return sum(
        int(batch.get(phase, {}).get("ns", 0)) for batch in model_stats.get("batch_stats", []) for phase in PHASES[1:]
    )


def composing_models(admin: AdminClient, model: str) -> list[str]:
    config = admin.config(model)
    return [step["model_name"] for step in config.get("ensemble_scheduling", {}).get("step", [])]


def http_url(url: str) -> str:
    return url if "://" in url else f"http://{url}"


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer exited with an error; ``returncode`` is its exit status."""

    def __init__(self, returncode: int, output: str):
        super().__init__(f"perf_analyzer exited with {returncode}:\n{output}")
        self.returncode = returncode


def measure(
    perf_analyzer: str,
    admin: AdminClient,
    headers: dict[str, str],
    url: str,
    model: str,
    data: Path,
    concurrency: int,
    interval_ms: int,
    max_trials: int,
    stability_percentage: float,
    steps: list[str],
    csv_path: Path,
    request_count: int | None = None,
    processes: list[process_cpu.Process] | None = None,
) -> tuple[dict, list[dict], dict[str, float]]:
    """One perf_analyzer run at ``concurrency``: its CSV row (with the ensemble's server successes and failures
    added) and per composing model the breakdown of its server time (``steps``) over the run. Its measurement
    windows last ``interval_ms``, or, with ``request_count``, that many requests (slow requests, e.g. long
    documents, then never leave a window empty). Third: CPU microseconds per answered request of each of the
    server's ``processes`` over the run."""
    before = settled_statistics(admin)
    cpu_before = process_cpu.snapshot(processes or [])
    window = (
        ["--measurement-mode", "count_windows", "--measurement-request-count", str(request_count)]
        if request_count
        else ["--measurement-interval", str(interval_ms)]
    )
    command = [
        perf_analyzer,
        "-m",
        model,
        "-u",
        url,
        "-i",
        "grpc",
        "--input-data",
        str(data),
        "--concurrency-range",
        str(concurrency),
        *window,
        "--max-trials",
        str(max_trials),
        "--stability-percentage",
        str(stability_percentage),
        "-f",
        str(csv_path),
        "--verbose-csv",
        *(arg for h in headers.items() for arg in ("-H", ":".join(h))),
    ]
    print(" ".join(command[: -2 * len(headers)] if headers else command), flush=True)  # not the admin key
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise PerfAnalyzerError(result.returncode, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    after = settled_statistics(admin)
    cpu_after = process_cpu.snapshot(processes or [])
    with open(csv_path) as f:
        row = list(csv.DictReader(f))[-1]
    csv_path.unlink()
    ensemble = delta(after, before, model)
    row["Server Failures"] = ensemble["fail_count"]
    row["Server Successes"] = ensemble["success_count"]
    breakdown = []
    for name in steps:
        d = delta(after, before, name)
        n = max(1, d["success_count"])
        breakdown.append(
            {
                "concurrency": concurrency,
                "model": name,
                "requests": d["success_count"],
                "executions": d["execution_count"],
                "requests_per_execution": round(d["success_count"] / max(1, d["execution_count"]), 2),
                # batch elements (windows for the model step) per second of the whole run, and per
                # second of the step's own compute (its throughput when it is the bottleneck)
                "inferences": d["inference_count"],
                "inferences_per_s": round(d["inference_count"] / seconds, 1),
                "inferences_per_compute_s": round(d["inference_count"] / max(d["execution_ns"], 1) * 1e9, 1),
                "compute_per_request_us": round(d["execution_ns"] / n / 1000, 1),
                **{f"{p}_us": round(d[f"{p}_ns"] / n / 1000, 1) for p in PHASES},
            }
        )
    cpu = process_cpu.per_request_us(cpu_before, cpu_after, ensemble["success_count"])
    return row, breakdown, cpu


def data_pairs(data: Path) -> list[tuple[str, str]]:
    """The (question, context) pairs of a perf_analyzer input file, in order."""
    entries = json.loads(data.read_text())["data"]
    return [(q, c) for e in entries for q, c in zip(e["question"]["content"], e["context"]["content"])]


def cpu_rows(cpu: dict[int, dict[str, float]], bare_us: float | None, questions_per_request: float = 1.0) -> list[dict]:
    """Per concurrency and process, CPU us per request (and per question), and per request as a multiple of the
    bare tokenizer call on one pair; plus the sums the targets are stated in: outside the model step
    (tritonserver, tokenizer, decoder) and all."""
    rows = []
    for concurrency, per_process in cpu.items():
        by_model: dict[str, float] = {}
        for name, us in per_process.items():
            model = process_cpu.Process(0, name).model
            by_model[model] = by_model.get(model, 0.0) + us
        outside = sum(us for model, us in by_model.items() if model in OUTSIDE_MODEL_STEP)
        entries = [*per_process.items(), ("outside the model step", outside), ("all", sum(per_process.values()))]
        for name, us in entries:
            ratio = round(us / bare_us, 2) if bare_us else None
            rows.append(
                {
                    "concurrency": concurrency,
                    "process": name,
                    "cpu_us_per_request": us,
                    "cpu_us_per_question": round(us / questions_per_request, 1),
                    "x_bare_tokenizer": ratio,
                }
            )
    return rows


def run(args) -> int:
    perf_analyzer = find_perf_analyzer()
    key = parse_header(args.admin_key) if args.admin_key else local_admin_key(args.url)
    admin = AdminClient(http_url(args.http_url), key)  # statistics and configs are admin protocols
    # perf_analyzer reads the model's configuration (admin key) and infers (the inference key, --api-key)
    headers = grpc_headers(key) | grpc_headers(args.api_key)
    steps = composing_models(admin, args.model)
    processes = process_cpu.server_processes(grpc_port(args.url))
    if not processes:
        print(f"no server listening on {args.url} runs on this machine: no CPU accounting", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, end, step = (int(x) for x in args.concurrency.split(":"))
    rows, breakdown, cpu, failed = [], [], {}, 0
    bare = bare_tokenizer_us(args) if processes else []  # before the sweep, and after it
    for concurrency in range(start, end + 1, step):
        try:
            row, steps_breakdown, cpu[concurrency] = measure(
                perf_analyzer,
                admin,
                headers,
                args.url,
                args.model,
                args.data,
                concurrency,
                args.interval_ms,
                args.max_trials,
                args.stability_percentage,
                steps,
                out.with_name(f"{out.stem}-c{concurrency}.csv"),
                processes=processes,
            )
        except PerfAnalyzerError as error:
            print(error, file=sys.stderr)
            return error.returncode
        rows.append(row)
        breakdown += steps_breakdown
        failed += row["Server Failures"]

    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(out.with_name(f"{out.stem}-breakdown.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(breakdown[0]))
        writer.writeheader()
        writer.writerows(breakdown)
    plot(rows, out.with_suffix(".png"), args)
    print(table(rows, breakdown, steps))
    if processes:
        bare += bare_tokenizer_us(args)
        bare_us = round(median(bare), 1) if bare else None
        pairs, requests = data_pairs(args.data), len(json.loads(args.data.read_text())["data"])
        costs = cpu_rows(cpu, bare_us, len(pairs) / max(requests, 1))
        with open(out.with_name(f"{out.stem}-cpu.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(costs[0]))
            writer.writeheader()
            writer.writerows(costs)
        print(cpu_table(costs, bare_us))
    if failed:
        print(f"{failed} requests failed on the server", file=sys.stderr)
        return 1
    return 0


def table(rows: list[dict], breakdown: list[dict], steps: list[str]) -> str:
    """Per concurrency: throughput, latency, and per step queue + compute per request (us) and requests per
    execute (the batching of that step)."""
    headers = [f"{s} us q+c, req/exec" for s in steps]
    lines = ["concurrency  infer/s   p50 ms   p99 ms   " + "  ".join(headers)]
    for row in rows:
        c = int(row["Concurrency"])
        parts = []
        for s, header in zip(steps, headers):
            b = next(x for x in breakdown if x["concurrency"] == c and x["model"] == s)
            parts.append(
                f"{b['queue_us']:>6.0f}+{b['compute_per_request_us']:<6.0f} {b['requests_per_execution']:>5.1f}".ljust(
                    len(header)
                )
            )
        lines.append(
            f"{c:>11}  {float(row['Inferences/Second']):>7.2f}  {int(row['p50 latency']) / 1000:>7.1f}  "
            f"{int(row['p99 latency']) / 1000:>7.1f}   " + "  ".join(parts)
        )
    return "\n".join(lines)


def bare_tokenizer_us(args) -> list[float]:
    """Measurements of the bare tokenizer library's CPU us per pair on the run's pairs (none without the
    served tokenizer.json here)."""
    if not args.tokenizer.is_file():
        return []
    return prepost.library_us(args.tokenizer, data_pairs(args.data), BARE_BATCH, 2.0)


def cpu_table(costs: list[dict], bare_us: float | None) -> str:
    bare = f"{bare_us:.0f} us per pair" if bare_us else "not measured (no tokenizer.json here)"
    lines = [f"CPU us per answered request (bare tokenizer library, one core, same pairs, median of 10: {bare})"]
    per_question_shown = any(abs(r["cpu_us_per_question"] - r["cpu_us_per_request"]) > 0.5 for r in costs)
    for c in dict.fromkeys(r["concurrency"] for r in costs):
        lines.append(f"  concurrency {c}")
        for r in (r for r in costs if r["concurrency"] == c):
            ratio = f"  {r['x_bare_tokenizer']:.2f} x" if r["x_bare_tokenizer"] is not None else ""
            per_question = f"  ({r['cpu_us_per_question']:.0f} per question)" if per_question_shown else ""
            lines.append(f"    {r['process']:<24} {r['cpu_us_per_request']:>8.0f}{ratio}{per_question}")
    return "\n".join(lines)


def grpc_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1]) if ":" in url else 8001


def plot(rows: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p99 = [int(r["p99 latency"]) / 1000 for r in rows]
    throughput = [float(r["Inferences/Second"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(p99, throughput, "o-")
    for r, x, y in zip(rows, p99, throughput):
        ax.annotate(f"c={r['Concurrency']}", (x, y), fontsize=8)
    ax.set(
        xlabel="p99 latency (ms)", ylabel="requests / s", title=f"{args.model} — perf_analyzer, {Path(args.data).name}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_URL, help="gRPC, for perf_analyzer")
    parser.add_argument("--http-url", default="localhost:8000", help="HTTP, for Triton's statistics")
    parser.add_argument(
        "--admin-key",
        metavar="HEADER=VALUE",
        help="the server's admin key (default: the one a local make serve wrote for this port)",
    )
    add_api_key_option(parser)
    parser.add_argument("--model", default=ENSEMBLE)
    parser.add_argument("--concurrency", default="1:4:1", help="start:end:step")
    parser.add_argument("--interval-ms", type=int, default=10000, help="perf_analyzer measurement window")
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument(
        "--stability-percentage",
        type=float,
        default=10,
        help="perf_analyzer's bound on variation between windows (raise it for short smoke runs)",
    )
    parser.add_argument("--data", type=Path, default=ROOT / "perf" / "data" / "squad.json")
    parser.add_argument("--out", default=str(ROOT / "perf" / "results" / "perf"))
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=ROOT / "model_repository" / "tokenizer" / "1" / "tokenizer.json",
        help="the served tokenizer, for the bare tokenizer library's cost on the same pairs",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
