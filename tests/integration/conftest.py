"""One real Triton server per test session, started the way a user starts it: ``make serve MODEL=<dir>``
(export of the tiny checkpoint into a copy of the model repository, then the embedded tritonserver)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import TritonQA
from serving.admin import AdminClient, local_admin_key
from serving.configs import edit
from serving.export import copy_repository
from tests.conftest import ROOT

STARTUP_TIMEOUT_S = 300
# The Python the servers run on (make serve PYTHON=...; make test passes its PYTHON): the tests themselves run
# in .venv, which exports the model.
SERVER_PYTHON = os.environ.get("SERVER_PYTHON", "")


@dataclass
class Server:
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
        """The random admin key ``make serve`` wrote for this server (its admin protocols need it)."""
        return local_admin_key(self.grpc_url)

    @property
    def admin(self) -> AdminClient:
        """Statistics, configs and the repository over HTTP, with the admin key."""
        return AdminClient(self.http_url, self.admin_key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    workdir: Path,
    checkpoint: Path,
    repository: Path,
    serve_args: str = "",
    ports: tuple[int, int, int] | None = None,
    wait: bool = True,
    engine: str = "onnxruntime",
    precision: str = "",
) -> Server:
    """``make serve MODEL=<checkpoint> REPOSITORY=<repository> ENGINE=<engine> PRECISION=<precision>
    [PYTHON=$SERVER_PYTHON]`` on free (or given) ports, in its own process group; waits until the server is
    ready. The engine is named (not auto): the tests' servers are the same with or without a GPU. The
    supervisor's question every few seconds is off (``--probe-s 0``) unless ``serve_args`` set it: its requests
    would count in the statistics and metrics the tests read (tests/integration/test_faults.py turns it on)."""
    if "--probe-s" not in serve_args:
        serve_args = f"--probe-s 0 {serve_args}".strip()
    grpc_port, http_port, metrics_port = ports or (free_port(), free_port(), free_port())
    log = workdir / f"server-{grpc_port}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
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
                *([f"PYTHON={SERVER_PYTHON}"] if SERVER_PYTHON else []),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(
        f"localhost:{grpc_port}",
        f"http://localhost:{http_port}",
        f"http://localhost:{metrics_port}",
        process,
        log,
        repository,
    )
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.ready():
        if not server.alive() or time.monotonic() > deadline:
            stop(server.process)
            pytest.fail(f"tritonserver did not become ready; its log:\n{server.log.read_text()[-5000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory, tiny_checkpoint):
    workdir = tmp_path_factory.mktemp("triton")
    repository = workdir / "model_repository"
    copy_repository(ROOT / "model_repository", repository)
    # whether a request fits a step's max_request_ms depends on the machine's pace, which this server's answers
    # must not: its refusals are tested on servers of their own (test_resource_bounds.py)
    for step in ("encoder", "decoder"):
        edit(repository / step / "config.pbtxt", {"max_request_ms": "0"})
    server = launch(workdir, tiny_checkpoint, repository)
    yield server
    stop(server.process)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def qa(triton_server):
    with TritonQA(triton_server.grpc_url, timeout_s=60) as client:
        yield client
