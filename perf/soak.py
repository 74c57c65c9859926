"""A bounded soak test: measure capacity, then offer twice that load (open loop) for a few minutes.

    python -m perf.soak --url localhost:8001 --duration-s 180      (make soak; not part of make test)

Reports requests sent, answered, refused by status, and *lost* (neither answered nor failed with an error —
must be 0), latency of the answered ones, and the resident memory of tritonserver and its stub processes
before, at the peak and after (the server must run on this machine, found by its gRPC port), and how often
tritonserver was restarted meanwhile (``make serve``'s supervisor restarts it when a stub dies or its memory
stays above --max-server-memory-mb). Writes perf/results/soak-<label>.json. Traffic goes only to the given URL
(use a loopback address).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

from client import DEFAULT_URL, AsyncTritonQA, QAError
from serving.processes import family, memory_mb, tritonserver_pids
from testkit.inputs import squad_sized_pairs

ROOT = Path(__file__).resolve().parent.parent


def server_rss_mb(grpc_port: int) -> float:
    """Resident memory of the tritonserver listening on ``grpc_port`` plus its child processes (the stubs)."""
    servers = tritonserver_pids(grpc_port)
    return sum(memory_mb(pid, "VmRSS") for pid in family(servers)) if servers else float("nan")


async def closed_loop_capacity(qa: AsyncTritonQA, pairs, seconds: float, concurrency: int = 4) -> float:
    done, stop_at = 0, time.perf_counter() + seconds

    async def worker(offset):
        nonlocal done
        i = offset
        while time.perf_counter() < stop_at:
            await qa.ask(*pairs[i % len(pairs)])
            done += 1
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done / (time.perf_counter() - start)


async def soak(args) -> dict:
    pairs = squad_sized_pairs(200, seed=1)
    port = int(args.url.rsplit(":", 1)[1])
    async with AsyncTritonQA(args.url, timeout_s=args.timeout_s) as qa:
        capacity = await closed_loop_capacity(qa, pairs, args.capacity_s)
        rate = capacity * args.load
        print(f"capacity {capacity:.2f} q/s; offering {rate:.2f} q/s for {args.duration_s:.0f} s", flush=True)
        rss = {"before_mb": server_rss_mb(port), "peak_mb": 0.0}
        servers = tritonserver_pids(port)  # every tritonserver seen: more than one means restarts
        outcomes: collections.Counter = collections.Counter()
        latencies: list[float] = []
        sent = 0

        async def one(i):
            started = time.perf_counter()
            try:
                answer = await qa.ask(*pairs[i % len(pairs)])
                assert answer.text == pairs[i % len(pairs)][1][answer.start : answer.end]
                outcomes["answered"] += 1
                latencies.append(time.perf_counter() - started)
            except QAError as error:
                outcomes[type(error).__name__] += 1

        tasks = []
        start = time.perf_counter()
        while (now := time.perf_counter()) - start < args.duration_s:
            while sent < (now - start) * rate:
                tasks.append(asyncio.create_task(one(sent)))
                sent += 1
            rss["peak_mb"] = max(rss["peak_mb"], server_rss_mb(port))
            servers |= tritonserver_pids(port)
            await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        rss["after_mb"] = server_rss_mb(port)
        servers |= tritonserver_pids(port)
    finished = sum(outcomes.values())
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "url": args.url,
        "capacity_qps": capacity,
        "offered_qps": rate,
        "duration_s": elapsed,
        "sent": sent,
        "answered": outcomes.pop("answered", 0),
        "errors": dict(outcomes),
        "lost": sent - finished,
        "answered_p50_ms": float(np.percentile(ms, 50)),
        "answered_p99_ms": float(np.percentile(ms, 99)),
        "server_rss": rss,
        "server_rss_growth_mb": rss["after_mb"] - rss["before_mb"],
        "server_restarts": max(len(servers) - 1, 0),
        "timeout_s": args.timeout_s,
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--capacity-s", type=float, default=15.0, help="closed-loop capacity measurement")
    parser.add_argument("--load", type=float, default=2.0, help="offered load as a multiple of capacity")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per-request deadline")
    parser.add_argument("--label", default="cpu")
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args))
    out = ROOT / "perf" / "results" / f"soak-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
