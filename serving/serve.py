"""Run a real Triton Inference Server on the model repository, without Docker.

    python -m serving.serve --model <hub id or local dir>      (what ``make serve`` runs)

Uses the ``tritonserver`` binary that PyPI ``nvidia-pytriton`` ships. Its Python backend starts one stub
process per model instance, running the interpreter found first on PATH: this virtual environment's. The
stub for this Python version is copied into a private copy of the backend directory (``.triton/``, once).
The model is exported first when the repository holds no export of it.

This process then supervises tritonserver: Ctrl-C / SIGTERM are passed on (Triton finishes in-flight requests,
up to its exit timeout, and exits); and when a Python-backend stub process dies (killed, out of memory),
which this Triton build neither reports nor repairs (its health endpoints stay green while every request to
that model fails), the server is restarted gracefully. ``--no-supervise`` execs tritonserver instead.
"""

from __future__ import annotations

import argparse
import ctypes.util
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from serving.export import DEFAULT_MODEL, DEFAULT_REPOSITORY, PRECISIONS, is_current

PROJECT = Path(__file__).resolve().parent.parent


class ServerSetupError(RuntimeError):
    """The embedded server cannot start on this machine; the message says what is missing."""


def triton_home() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerSetupError("nvidia-pytriton is not installed in this environment: run make setup")
    return Path(next(iter(spec.submodule_search_locations)))


def backend_directory(cache: Path) -> Path:
    """A copy of the bundled Python backend with the stub for this interpreter's version."""
    home = triton_home() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerSetupError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    if not (ctypes.util.find_library(f"python{version}") or Path(f"/usr/lib/x86_64-linux-gnu/libpython{version}.so.1.0").exists()):
        raise ServerSetupError(f"the Python backend stub needs libpython{version}.so.1.0: "
                               f"apt-get install libpython{version}")
    # one directory per Python version, written once and renamed into place: servers running side by side
    # (tests, a restart) never see it half-copied
    backends = cache / f"backends-py{version}"
    target = backends / "python"
    if not (target / "triton_python_backend_stub").is_file():
        backends.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=backends))
        shutil.copytree(home / "backends" / "python", scratch / "python")
        shutil.copy2(stub, scratch / "python" / "triton_python_backend_stub")
        try:
            os.rename(scratch / "python", target)
        except OSError:  # another server put it in place first
            pass
        shutil.rmtree(scratch, ignore_errors=True)
    return backends


def server_command(repository: Path, grpc_port: int, http_port: int, metrics_port: int,
                   extra: list[str], cache: Path) -> tuple[list[str], dict[str, str]]:
    home = triton_home()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libs = home.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
    command = [
        str(home / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={repository.resolve()}",
        f"--backend-directory={backend_directory(cache)}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-timeout-secs=30",
        "--log-verbose=0",
        *extra,
    ]
    return command, env


def security_args(args: argparse.Namespace) -> list[str]:
    """tritonserver flags for the address, gRPC TLS and the inference key."""
    extra = [f"--grpc-address={args.address}", f"--http-address={args.address}"]
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    if args.tls_cert:
        extra += ["--grpc-use-ssl=true", f"--grpc-server-cert={args.tls_cert.resolve()}",
                  f"--grpc-server-key={args.tls_key.resolve()}"]
        if args.tls_client_ca:
            extra += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={args.tls_client_ca.resolve()}"]
    if args.api_key:
        header, _, value = args.api_key.partition("=")
        if not header or not value:
            raise SystemExit("--api-key takes HEADER=VALUE")
        # the inference protocol needs the key; HTTP (health, metrics scrapes) stays as configured
        extra.append(f"--grpc-restricted-protocol=inference:{header}={value}")
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local checkpoint directory to serve")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="of the export (int8: opt-in)")
    parser.add_argument("--no-export", action="store_true", help="serve the repository as it is")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--cache", type=Path, default=PROJECT / ".triton")
    parser.add_argument("--address", default="0.0.0.0", help="interface for gRPC and HTTP (127.0.0.1: local only)")
    parser.add_argument("--tls-cert", type=Path, help="serve gRPC over TLS with this PEM certificate ...")
    parser.add_argument("--tls-key", type=Path, help="... and this PEM private key")
    parser.add_argument("--tls-client-ca", type=Path, help="mutual TLS: accept clients signed by this CA")
    parser.add_argument("--api-key", metavar="HEADER=VALUE",
                        help="require this header on the gRPC inference protocol (Triton's restricted protocol)")
    parser.add_argument("--no-supervise", action="store_true", help="exec tritonserver, no stub watchdog")
    parser.add_argument("tritonserver_args", nargs="*", help="passed on to tritonserver (after --)")
    args = parser.parse_args(argv)

    if not args.no_export and not is_current(args.repository, args.model, args.precision):
        from serving.export import main as export_main

        status = export_main(["--model", args.model, "--repository", str(args.repository),
                              "--precision", args.precision])
        if status:
            return status
    try:
        command, env = server_command(args.repository, args.grpc_port, args.http_port, args.metrics_port,
                                      security_args(args) + args.tritonserver_args, args.cache)
    except ServerSetupError as error:
        print(f"cannot start tritonserver: {error}", file=sys.stderr)
        return 2
    print(" ".join(command), flush=True)
    if args.no_supervise:
        os.execve(command[0], command, env)
    host = "127.0.0.1" if args.address in ("0.0.0.0", "::") else args.address
    return Supervisor(command, env, f"http://{host}:{args.http_port}/v2/health/ready").run()


def stub_pids(parent: int) -> set[int]:
    """The Python-backend stub processes tritonserver ``parent`` started."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"triton_python_backend_stub" in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


class Supervisor:
    """Runs tritonserver; forwards SIGINT/SIGTERM; restarts it when one of its stub processes dies."""

    POLL_S = 1.0
    RESTART_GRACE_S = 5.0

    def __init__(self, command: list[str], env: dict[str, str], ready_url: str):
        self.command, self.env, self.ready_url = command, env, ready_url
        self.stopping = False
        self.process: subprocess.Popen | None = None

    def _forward(self, signum, _frame) -> None:
        self.stopping = True
        if self.process and self.process.poll() is None:
            self.process.send_signal(signum)

    def _restart_stop(self) -> None:
        """Stop tritonserver for a restart: gracefully, but a model whose stub is dead never finishes
        unloading, so after RESTART_GRACE_S it is killed with the stubs it leaves."""
        assert self.process is not None
        stubs = stub_pids(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.RESTART_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            for pid in stubs:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        while True:
            self.process = subprocess.Popen(self.command, env=self.env)
            stubs: set[int] | None = None  # armed once the server is ready (loading starts short-lived stubs)
            restart = False
            while self.process.poll() is None:
                time.sleep(self.POLL_S)
                if stubs is None:
                    stubs = stub_pids(self.process.pid) if self._ready() else None
                    continue
                dead = stubs - stub_pids(self.process.pid)
                if dead and not self.stopping:
                    print(f"serve: Python-backend stub process(es) {sorted(dead)} died; restarting tritonserver",
                          file=sys.stderr, flush=True)
                    self._restart_stop()
                    restart = True
                    break
            if self.stopping or not restart:  # asked to stop, or tritonserver ended by itself
                return self.process.wait()


if __name__ == "__main__":
    sys.exit(main())
