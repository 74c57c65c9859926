"""A Triton server in a process group of its own, for the tests and the benchmarks: free ports, the two ways they
start it (``make serve`` as a user does, ``python -m serving.serve --no-export`` on a prepared repository), the
wait until it is ready and the stop of the whole group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from serving.admin import AdminClient, local_admin_key

STARTUP_TIMEOUT_S = 300
LOG_TAIL_CHARS = 5000  # what a failure shows of the server's log
SETTLE_TIMEOUT_S = 60.0
T = TypeVar("T")


class ServerStartError(RuntimeError):
    """The server exited, or was not ready by the deadline (it has been stopped); ``tail`` ends its log."""

    def __init__(self, log: Path, tail: str):
        super().__init__(f"tritonserver did not start; see {log}")
        self.log, self.tail = log, tail


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """``sig`` to ``process``'s whole group (make, supervisor, tritonserver, stubs), SIGKILL after 60 s."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Server:
    """A started server: its URLs, its process (its group's leader), its log and its model repository."""

    grpc_url: str
    http_url: str
    metrics_url: str
    process: subprocess.Popen
    log: Path
    repository: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        return AdminClient(self.http_url).ready()

    @property
    def admin_key(self) -> tuple[str, str] | None:
        """The random admin key the server's ``serving.serve`` wrote (its admin protocols need it)."""
        return local_admin_key(self.grpc_url)

    @property
    def admin(self) -> AdminClient:
        """Statistics, configs and the repository over HTTP, with the admin key."""
        return AdminClient(self.http_url, self.admin_key)

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Until the server is ready; stops it and raises ServerStartError if it exits or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if not self.alive() or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if self.log.is_file() else ""
                raise ServerStartError(self.log, tail)
            time.sleep(0.5)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.process, sig)


def start(
    command: list[str],
    ports: tuple[int, int, int],
    log: Path,
    repository: Path,
    cwd: Path,
    timeout_s: float = STARTUP_TIMEOUT_S,
    wait: bool = True,
    append: bool = False,
) -> Server:
    """``command`` (serving gRPC, HTTP and metrics on ``ports``) in a session of its own, its output to ``log``
    (appended to with ``append``, else written anew); ready when it returns, unless ``wait`` is false (then
    ``Server.wait_ready``). Raises ServerStartError as ``Server.wait_ready`` does."""
    grpc_port, http_port, metrics_port = ports
    with open(log, "ab" if append else "wb") as out:
        # its own session: stop() signals the whole group, whatever the command started under it
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(
        f"localhost:{grpc_port}",
        f"http://localhost:{http_port}",
        f"http://localhost:{metrics_port}",
        process,
        log,
        repository,
    )
    if wait:
        server.wait_ready(timeout_s)
    return server


def make_serve_command(
    checkpoint: Path,
    repository: Path,
    ports: tuple[int, int, int],
    serve_args: str = "",
    engine: str = "onnxruntime",
    precision: str = "",
    python: str = "",
) -> list[str]:
    """``make serve MODEL=<checkpoint> REPOSITORY=<repository> ENGINE=<engine> PRECISION=<precision>
    [PYTHON=<python>]`` on ``ports``: the export, then the embedded tritonserver, as a user starts it. The engine
    is named (not auto): the servers are the same with or without a GPU. The supervisor's question every few
    seconds is off (``--probe-s 0``) unless ``serve_args`` set it: its requests would count in the statistics
    and metrics the callers read."""
    if "--probe-s" not in serve_args:
        serve_args = f"--probe-s 0 {serve_args}".strip()
    grpc_port, http_port, metrics_port = ports
    return [
        "make",
        "--no-print-directory",
        "serve",
        f"MODEL={checkpoint}",
        f"REPOSITORY={repository}",
        f"GRPC_PORT={grpc_port}",
        f"HTTP_PORT={http_port}",
        f"METRICS_PORT={metrics_port}",
        f"ENGINE={engine}",
        f"PRECISION={precision}",
        f"SERVE_ARGS={serve_args}",
        *([f"PYTHON={python}"] if python else []),
    ]


def serve_module_command(
    repository: Path, ports: tuple[int, int, int], serve_args: tuple[str, ...] = (), python: str = sys.executable
) -> list[str]:
    """``python -m serving.serve --no-export`` on ``repository`` (exported already) and ``ports``."""
    grpc_port, http_port, metrics_port = ports
    return [
        python,
        "-m",
        "serving.serve",
        "--no-export",
        "--repository",
        str(repository),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
        *serve_args,
    ]


def settled(read: Callable[[], T], until: Callable[[T], bool] = lambda _: True, quiet_s: float = 1.0) -> T:
    """``read()`` (a server's statistics or metrics) once ``until`` holds of it and it has not changed for
    ``quiet_s``, or what it is after SETTLE_TIMEOUT_S. Triton counts a request just after its response and a step
    sends its metrics every second; a neighbour's last requests land before a baseline read this way."""
    value, changed = read(), time.monotonic()
    deadline = changed + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(0.1)
        latest = read()
        if latest != value:
            value, changed = latest, time.monotonic()
        elif until(value) and time.monotonic() - changed >= quiet_s:
            break
    return value


def eventually(check: Callable[[], bool], timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Whether ``check()`` holds within ``timeout_s`` (polled): what a server does shortly after a call (a memory
    trim, a statistics count), waited for rather than slept for."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
