"""The GPU run's checks beside the load: the preflight (before anything is built), the server's memory (what the
liveness bound must allow), a re-export served after a restart (its answers must change), and tritonserver
killed and restarted behind the front (nginx with the project's configuration)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from perf.gpu import ROOT, log

FRONT_CONF = ROOT / "deploy" / "k8s" / "base" / "nginx.conf"
FRONT_PORTS = (8000, 8001, 8002)  # the front's, as the pod and compose publish them
TRITON_PORTS = (8101, 8100, 8102)  # gRPC, HTTP, metrics: where the front's configuration reaches Triton


def nvidia_smi(fields: str) -> list[str] | None:
    """The first GPU's ``fields`` (nvidia-smi --query-gpu), or None without a working nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [cell.strip() for cell in out.splitlines()[0].split(",")] if out else None


def preflight(environment: dict, device: str) -> dict:
    """What the run stands on: the GPU, its driver and compute capability, torch and its CUDA, whether torch has
    kernels for the GPU (``runtime.torch_runner.runs_on``, as the model step checks at load), the kit's packages.
    ``problems`` lists what stops the GPU run; on the CPU fallback there is none to have."""
    from runtime.torch_runner import runs_on

    found = {
        "device": device,
        "python": environment.get("python"),
        "torch": environment.get("torch"),
        "torch_cuda": environment.get("torch_cuda"),
        "packages": {k: environment.get(k) for k in ("numpy", "tokenizers", "transformers", "safetensors")},
        "problems": [],
    }
    smi = nvidia_smi("name,driver_version,compute_cap,memory.total")
    if smi:
        found.update(gpu=smi[0], driver=smi[1], compute_capability=smi[2], memory=smi[3])
    found["missing"] = sorted(k for k, v in found["packages"].items() if str(v).startswith("missing"))
    if device != "gpu":
        return found
    capability = environment.get("capability")
    arch_list = environment.get("arch_list") or []
    found.update(capability=capability, arch_list=arch_list)
    if not environment.get("cuda"):
        found["problems"].append(f"torch {found['torch']} sees no CUDA device (driver {found.get('driver')})")
    elif capability and not runs_on(tuple(capability), arch_list):
        found["problems"].append(
            f"torch {found['torch']} has no kernels for compute capability {capability[0]}.{capability[1]} "
            f"(it has {', '.join(arch_list)})"
        )
    if found["missing"]:
        found["problems"].append(f"missing packages: {', '.join(found['missing'])}")
    return found


def reexport(args, work: Path, repository: Path, size: str, vocab: Path | None, start_server, before: list) -> dict:
    """Another random checkpoint of the same shape exported into the served repository, the server started again
    on it: its answers to the first parity questions must differ from the first checkpoint's (an engine or state
    kept from the earlier export would give the same)."""
    from perf.gpu.served import served_answers
    from serving.export import export
    from testkit.checkpoints import build_random_checkpoint
    from testkit.inputs import squad_sized_pairs

    other = work / f"checkpoint-{size}-seed1"
    if not (other / "config.json").is_file():
        shutil.rmtree(other, ignore_errors=True)
        build_random_checkpoint(other, size, seed=1, vocab=vocab)
    export(str(other), repository, engine="torch", onnx=False)
    pairs = squad_sized_pairs(len(before))
    server = start_server("server-reexported.log")
    try:
        after = served_answers(server.http_url, pairs)
    finally:
        server.stop()
    changed = sum(a != b for a, b in zip(after, before))
    return {"compared": len(after), "changed": changed, "met": changed > 0}


def front_restart(args, repository: Path, start_server, perf_analyzer: str) -> dict:
    """The server on the front's upstream ports with nginx in front (deploy/k8s/base/nginx.conf); answers through
    the front, tritonserver killed (SIGKILL), the supervisor restarting it: answers through the same front
    again. Not run where nginx is not installed or the ports are taken."""
    from client.names import ENSEMBLE
    from perf.load_test import PerfAnalyzerError, measure
    from serving.admin import grpc_headers
    from serving.processes import tritonserver_pids

    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if nginx is None:
        return {"ran": False, "why": "no nginx on this machine"}
    taken = [p for p in (*FRONT_PORTS, *TRITON_PORTS) if _port_taken(p)]
    if taken:
        return {"ran": False, "why": f"ports {taken} are taken"}
    server = start_server("server-front.log", ports=TRITON_PORTS)
    front_log = open(args.out / "front.log", "wb")
    front = subprocess.Popen(
        [nginx, "-c", str(FRONT_CONF), "-g", "daemon off;"], stdout=front_log, stderr=subprocess.STDOUT
    )
    result: dict = {"ran": True, "answered_before": 0, "answered_after": 0, "failed": 0, "recovery_s": None}
    try:
        _wait_for(lambda: _http_ok(f"http://127.0.0.1:{FRONT_PORTS[0]}/v2/health/ready"), 30)
        headers = grpc_headers(server.admin_key)
        data = ROOT / "perf" / "data" / "squad.json"

        def through_front(name: str) -> None:
            try:
                row, _, _ = measure(
                    perf_analyzer,
                    server.admin,
                    headers,
                    f"127.0.0.1:{FRONT_PORTS[1]}",
                    ENSEMBLE,
                    data,
                    4,
                    args.interval_ms,
                    args.max_trials,
                    1000,
                    [],
                    args.out / f"front-{name}.csv",
                    request_count=32,
                )
            except PerfAnalyzerError as error:
                result["failed"] += 1
                log(f"front, {name}: {str(error)[-1500:]}")
                return
            result[f"answered_{name}"] = int(row["Server Successes"])
            result["failed"] += int(row["Server Failures"])

        through_front("before")
        killed = time.monotonic()
        for pid in tritonserver_pids(TRITON_PORTS[0]):  # tritonserver itself; its supervisor restarts it
            os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not _http_ok(f"http://127.0.0.1:{FRONT_PORTS[0]}/v2/health/ready"), 30)
        _wait_for(lambda: _http_ok(f"http://127.0.0.1:{FRONT_PORTS[0]}/v2/health/ready"), 300)
        result["recovery_s"] = time.monotonic() - killed
        through_front("after")
    except TimeoutError as error:
        result["why"] = str(error)
    finally:
        front.send_signal(signal.SIGQUIT)
        try:
            front.wait(timeout=60)
        except subprocess.TimeoutExpired:
            front.kill()
        front_log.close()
        server.stop()
    result["met"] = bool(result["answered_before"] and result["answered_after"])
    return result


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_for(check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s:.0f} s")
        time.sleep(0.5)
