"""The server runs on the Python asked for: ``make serve PYTHON=...`` (SERVER_PYTHON for the tests), by default
.venv's, the one these tests run on."""

import subprocess
import sys

from tests.conftest import ROOT
from tests.integration.conftest import SERVER_PYTHON


def test_the_server_runs_on_the_python_asked_for(triton_server, qa):
    if SERVER_PYTHON:
        version = subprocess.run(
            ["bash", str(ROOT / "serving" / "find-python"), SERVER_PYTHON], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    else:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
    # serve.py prints the tritonserver command: the backend directory holds that Python version's stub
    assert f"/backends-py{version}" in triton_server.log.read_text()
    assert isinstance(qa.ask("Who wrote it?", "It was written by Ada Lovelace in 1843.").text, str)
