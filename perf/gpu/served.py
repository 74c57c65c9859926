"""The GPU run's served ensemble: its answers to the parity questions, perf_analyzer at each concurrency and on the
long document, with Triton's statistics."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from client.names import ENSEMBLE
from perf.gpu import ROOT, STEPS, log
from perf.gpu.machine import GpuMemory
from perf.gpu.report import render_row
from testkit.servers import ServerStartError, free_port, serve_module_command, start


def server_memory(grpc_port: int) -> dict[str, float]:
    """Private memory (anonymous resident MB) of tritonserver, what the liveness probe bounds, and of each
    model's stub processes (their instances summed)."""
    from serving.processes import memory_mb, stub_pids, tritonserver_pids

    memory: dict[str, float] = {}
    for pid in tritonserver_pids(grpc_port):
        memory["tritonserver"] = memory.get("tritonserver", 0.0) + memory_mb(pid)
        for model in ("tokenizer", "encoder", "decoder"):
            for stub in stub_pids(pid, model):
                try:
                    memory[model] = memory.get(model, 0.0) + memory_mb(stub)
                except OSError:
                    pass
    return memory


def served_answers(http_url: str, pairs: list[tuple[str, str]]) -> list[tuple[str, int, int] | str]:
    """The served (answer, start, end) of each pair, one request each (Triton's HTTP/JSON protocol), or the
    error the server answered it with (its message)."""
    answers: list[tuple[str, int, int] | str] = []
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
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                outputs = {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
        except urllib.error.HTTPError as error:
            answers.append(json.loads(error.read() or b"{}").get("error") or f"HTTP {error.code}")
            continue
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
    memory_mb: dict[str, float] | None = None,
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
        "windows_per_s": per_step["encoder"]["inferences_per_compute_s"],
        "gpu_mib": gpu_mib,
        "cpu_us": cpu_us or {},
        "memory_mb": memory_mb or {},
        "successes": int(row["Server Successes"]),
        "failures": int(row["Server Failures"]),
        "perf_analyzer": row,
        "steps": breakdown,
    }


def server_starter(args, repository: Path):
    """``start_server(log_name, ports=None)``: the embedded server on ``repository`` with the torch engine's
    configs (as the GPU service runs them), on free ports or ``ports`` (gRPC, HTTP, metrics); ready when it
    returns (testkit.servers.ServerStartError if it does not start)."""

    def start_server(log_name: str, ports: tuple[int, int, int] | None = None):
        ports = ports or (free_port(), free_port(), free_port())
        command = serve_module_command(repository, ports, ("--engine", "torch", "--address", "127.0.0.1"))
        return start(command, ports, args.out / log_name, repository, ROOT)

    return start_server


def run_served(args, device: str, start_server, pairs: list[tuple[str, str]]) -> dict:
    """Start the server, answer the parity questions, run perf_analyzer at each concurrency and on the long
    document (the server's memory after each), stop the server. A server that does not start, or a perf_analyzer
    run that fails, is reported (with the end of its output) and the run goes on: ``errors`` lists what failed."""
    from perf.load_test import PerfAnalyzerError, composing_models, measure
    from perf.process_cpu import server_processes
    from serving.admin import grpc_headers

    result = {"startup_s": None, "startup_gpu_mib": None, "rows": [], "answers": [], "errors": []}
    perf_analyzer = perf_analyzer_binary(args.work)
    server_log = args.out / "server.log"
    configs = (
        "configs/torch.pbtxt: torch fp16, CUDA graphs"
        if device == "gpu"
        else "CPU fallback: configs/torch.pbtxt on a CPU instance, fp32, default pre/post configs"
    )
    log(f"starting the server ({configs}; log: {server_log})")
    started = time.monotonic()
    try:
        with GpuMemory(device == "gpu") as memory:
            server = start_server(server_log.name)
    except ServerStartError as error:
        tail = "\n".join(error.tail.splitlines()[-40:])
        log(f"{error}; its last lines:\n{tail}")
        result["errors"].append(f"server: {error}")
        return result
    result.update(startup_s=time.monotonic() - started, startup_gpu_mib=memory.peak)
    log(f"server ready in {result['startup_s']:.0f} s" + (f"; GPU memory {memory.peak} MiB" if memory.peak else ""))
    try:
        started = time.monotonic()
        try:
            result["answers"] = served_answers(server.http_url, pairs[: args.parity_questions])
            log(f"{len(result['answers'])} parity questions answered in {time.monotonic() - started:.1f} s")
        except (OSError, ValueError, KeyError) as error:
            log(f"the parity questions failed: {error}")
            result["errors"].append(f"parity questions: {error}")
        headers = grpc_headers(server.admin_key)
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
                        server.grpc_url,
                        ENSEMBLE,
                        data,
                        concurrency,
                        args.interval_ms,
                        args.max_trials,
                        args.stability_percentage,
                        steps,
                        args.out / f"perf-c{concurrency}-{kind}.csv",
                        request_count,
                        processes=server_processes(int(server.grpc_url.rsplit(":", 1)[1])),
                    )
            except PerfAnalyzerError as error:
                log(f"{setup}: {error}")
                result["errors"].append(f"{setup}: perf_analyzer exited with {error.returncode}")
                continue
            grpc_port = int(server.grpc_url.rsplit(":", 1)[1])
            result["rows"].append(
                served_row(setup, row, breakdown, memory.peak, kind, cpu_us, server_memory(grpc_port))
            )
            log(render_row(result["rows"][-1], None, None))
    finally:
        server.stop()
    return result
