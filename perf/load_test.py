"""``make perf``: a perf_analyzer concurrency sweep against ``electra_qa`` over gRPC.

For each concurrency it runs Triton's perf_analyzer with the checked-in inputs (``perf/data``), reads
Triton's statistics before and after to break server time down per composing model, and finally writes

    <out>.csv             perf_analyzer's verbose CSV, one row per concurrency
    <out>-breakdown.csv   per composing model and concurrency: queue / compute input / infer / output (us)
    <out>.png             throughput vs p99 latency

and prints a short table last. The run fails when any request failed.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import tritonclient.grpc as grpcclient

from serving.admin import grpc_headers, local_admin_key, parse_header

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def find_perf_analyzer() -> str:
    for candidate in (os.environ.get("PERF_ANALYZER"), str(ROOT / ".perf-analyzer" / "bin" / "perf_analyzer"),
                      shutil.which("perf_analyzer")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("perf_analyzer not found: run `make perf-analyzer`, set PERF_ANALYZER, or use the compose "
                     "`sdk` service (see README)")


def statistics(client, headers: dict[str, str]) -> dict[str, dict]:
    """Cumulative counts and times of the ensemble and each composing model."""
    stats = client.get_inference_statistics(headers=headers, as_json=True)["model_stats"]
    return {s["name"]: s for s in stats}


def settled_statistics(client, headers: dict[str, str], timeout_s: float = 5.0) -> dict[str, dict]:
    """Statistics once they stop changing: Triton counts a request after sending its response, so right after
    perf_analyzer returns, the last requests may not be counted in every model yet."""
    current = statistics(client, headers)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        latest = statistics(client, headers)
        if latest == current:
            break
        current = latest
    return current


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
    return sum(int(batch.get(phase, {}).get("ns", 0)) for batch in model_stats.get("batch_stats", [])
               for phase in PHASES[1:])


def composing_models(client, model: str, headers: dict[str, str]) -> list[str]:
    config = client.get_model_config(model, headers=headers, as_json=True)["config"]
    return [step["model_name"] for step in config.get("ensemble_scheduling", {}).get("step", [])]


def run(args) -> int:
    perf_analyzer = find_perf_analyzer()
    client = grpcclient.InferenceServerClient(args.url)
    key = parse_header(args.admin_key) if args.admin_key else local_admin_key(args.url)
    headers = grpc_headers(key)  # statistics and configs are admin protocols
    steps = composing_models(client, args.model, headers)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, end, step = (int(x) for x in args.concurrency.split(":"))
    rows, breakdown, failed = [], [], 0
    for concurrency in range(start, end + 1, step):
        before = settled_statistics(client, headers)
        csv_path = out.with_name(f"{out.stem}-c{concurrency}.csv")
        command = [perf_analyzer, "-m", args.model, "-u", args.url, "-i", "grpc", "--input-data", str(args.data),
                   "--concurrency-range", str(concurrency), "--measurement-interval", str(args.interval_ms),
                   "--max-trials", str(args.max_trials), "--stability-percentage", str(args.stability_percentage),
                   "-f", str(csv_path), "--verbose-csv", *(arg for h in headers.items() for arg in ("-H", ":".join(h)))]
        print(" ".join(command[:-2 * len(headers)] if headers else command), flush=True)  # not the admin key
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:], sep="\n", file=sys.stderr)
            return result.returncode
        after = settled_statistics(client, headers)
        with open(csv_path) as f:
            rows.extend(csv.DictReader(f))
        csv_path.unlink()
        ensemble = delta(after, before, args.model)
        failed += ensemble["fail_count"]
        for name in steps:
            d = delta(after, before, name)
            n = max(1, d["success_count"])
            breakdown.append({"concurrency": concurrency, "model": name, "requests": d["success_count"],
                              "executions": d["execution_count"],
                              "requests_per_execution": round(d["success_count"] / max(1, d["execution_count"]), 2),
                              "compute_per_request_us": round(d["execution_ns"] / n / 1000, 1),
                              **{f"{p}_us": round(d[f"{p}_ns"] / n / 1000, 1) for p in PHASES}})
        rows[-1]["Server Failures"] = ensemble["fail_count"]
        rows[-1]["Server Successes"] = ensemble["success_count"]

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
            parts.append(f"{b['queue_us']:>6.0f}+{b['compute_per_request_us']:<6.0f} "
                         f"{b['requests_per_execution']:>5.1f}".ljust(len(header)))
        lines.append(f"{c:>11}  {float(row['Inferences/Second']):>7.2f}  {int(row['p50 latency']) / 1000:>7.1f}  "
                     f"{int(row['p99 latency']) / 1000:>7.1f}   " + "  ".join(parts))
    return "\n".join(lines)


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
    ax.set(xlabel="p99 latency (ms)", ylabel="requests / s", title=f"{args.model} — perf_analyzer, {Path(args.data).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="localhost:8001")
    parser.add_argument("--admin-key", metavar="HEADER=VALUE",
                        help="the server's admin key (default: the one a local make serve wrote for this port)")
    parser.add_argument("--model", default="electra_qa")
    parser.add_argument("--concurrency", default="1:4:1", help="start:end:step")
    parser.add_argument("--interval-ms", type=int, default=10000, help="perf_analyzer measurement window")
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--stability-percentage", type=float, default=10,
                        help="perf_analyzer's bound on variation between windows (raise it for short smoke runs)")
    parser.add_argument("--data", type=Path, default=ROOT / "perf" / "data" / "squad.json")
    parser.add_argument("--out", default=str(ROOT / "perf" / "results" / "perf"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
