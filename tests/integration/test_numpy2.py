"""numpy 2 in the Python-backend stubs' environment: the server refuses to start, saying why and what to
install, instead of starting green and crashing the tokenizer stub on the first request (nvidia-pytriton
0.7.0's stubs are built with pybind11 2.10, which mis-reads numpy 2's dtype structure: serving/stub_compat.py).

The numpy-2 environment is cheap: a venv without pip whose .pth puts numpy 2 (``pip install --target``, once,
kept in .cache/) in front of .venv's site-packages, so it has everything else the server has."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from serving.stub_env import server_command
from tests.conftest import ROOT
from tests.integration.conftest import STARTUP_TIMEOUT_S, free_port, stop

NUMPY2 = "numpy>=2,<3"
REFUSAL = "cannot be used by Triton's Python-backend stub"


@pytest.fixture(scope="module")
def numpy2_python(tmp_path_factory) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    numpy2 = ROOT / ".cache" / f"numpy2-py{version}"
    if not (numpy2 / "numpy").is_dir():
        numpy2.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=numpy2.parent))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--target",
                str(scratch / "site"),
                NUMPY2,
            ],
            check=True,
        )
        try:
            os.rename(scratch / "site", numpy2)
        except OSError:  # put in place by a concurrent run
            pass
        shutil.rmtree(scratch, ignore_errors=True)
    venv = tmp_path_factory.mktemp("numpy2") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # numpy 2 first, then .venv's site-packages with its own .pth files (the editable install of this project)
    (Path(site_packages) / "numpy2.pth").write_text(
        f"{numpy2}\nimport site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
    )
    probe = subprocess.run(
        [
            str(python),
            "-E",
            "-c",
            "import importlib.util, numpy, serving; "
            "assert importlib.util.find_spec('pytriton'); print(numpy.__version__)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=venv,
    )
    assert probe.stdout.startswith("2."), probe.stdout
    return python


def test_make_serve_with_numpy2_refuses_to_start_and_says_what_to_install(numpy2_python, tmp_path):
    result = subprocess.run(
        [
            str(numpy2_python),
            "-m",
            "serving.serve",
            "--no-export",
            "--repository",
            str(ROOT / "model_repository"),
            "--cache",
            str(tmp_path / "cache"),
            "--address",
            "127.0.0.1",
            "--grpc-port",
            str(free_port()),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot start tritonserver: numpy 2." in result.stderr
    assert REFUSAL in result.stderr and "pip install 'numpy>=1.26,<2'" in result.stderr
    assert "tritonserver" not in result.stdout  # nothing was started


def test_a_stub_that_finds_numpy2_fails_its_model_at_startup_not_per_request(numpy2_python, tmp_path):
    """The guard in the backend copy itself: tritonserver started directly, its stubs on the numpy-2
    environment, stops at startup with the reason (and never reports ready)."""
    repository = tmp_path / "model_repository"
    shutil.copytree(ROOT / "model_repository", repository, ignore=shutil.ignore_patterns("__pycache__"))
    command, env = server_command(
        repository,
        free_port(),
        free_port(),
        free_port(),
        ["--grpc-address=127.0.0.1", "--http-address=127.0.0.1"],
        tmp_path / "cache",
    )
    env["PATH"] = f"{numpy2_python.parent}{os.pathsep}{env['PATH']}"  # the stubs run the first python on PATH
    log = tmp_path / "tritonserver.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        process.wait(timeout=STARTUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tritonserver did not stop; its log:\n{log.read_text(errors='replace')[-5000:]}")
    finally:
        stop(process)
    text = log.read_text(errors="replace")
    assert process.returncode != 0, text[-5000:]
    for model in ("tokenizer", "encoder", "decoder"):
        assert f"failed to load '{model}'" in text
    assert "ImportError: numpy 2." in text and REFUSAL in text
