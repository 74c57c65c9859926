"""One real Triton server per test session, started the way a user starts it: ``make serve MODEL=<dir>``
(export of the tiny checkpoint into a copy of the model repository, then the embedded tritonserver)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client import TritonQA
from serving.configs import edit
from serving.export import copy_repository
from testkit.servers import STARTUP_TIMEOUT_S, Server, ServerStartError, free_port, make_serve_command, start, stop
from tests.conftest import ROOT

# The Python the servers run on (make serve PYTHON=...; make test passes its PYTHON): the tests themselves run
# in .venv, which exports the model.
SERVER_PYTHON = os.environ.get("SERVER_PYTHON", "")


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
    """``make serve`` as a user runs it (testkit.servers.make_serve_command: the probe off unless ``serve_args``
    set it, as tests/integration/test_faults.py does) on free (or given) ports, in its own process group; ready
    when it returns unless ``wait`` is false (then ``wait_ready``)."""
    ports = ports or (free_port(), free_port(), free_port())
    command = make_serve_command(checkpoint, repository, ports, serve_args, engine, precision, SERVER_PYTHON)
    # appended to: a server started again on the same ports (test_faults.py) writes on in the same log
    server = start(command, ports, workdir / f"server-{ports[0]}.log", repository, ROOT, wait=False, append=True)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: Server) -> None:
    try:
        server.wait_ready(STARTUP_TIMEOUT_S)
    except ServerStartError as error:
        pytest.fail(f"tritonserver did not become ready; its log:\n{error.tail}")


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


@pytest.fixture(scope="session")
def qa(triton_server):
    with TritonQA(triton_server.grpc_url, timeout_s=60) as client:
        yield client
