"""``make gpu-kit``'s kit, built for this Python and run here end to end in its CPU fallback (no GPU here): the
folder stays within 64 MiB, carries only this Python's stub, and ``bash run.sh --quick`` unpacks it, passes its
preflight, builds the tiny checkpoint, serves it with its own server on free ports, runs perf_analyzer (short
windows), serves a re-export after a restart, restarts tritonserver behind the front, runs the card's pipeline,
prints the table with every column, and every served answer equals the pipeline's (fp32)."""

import json
import os
import re
import subprocess
import sys

import pytest

from perf import gpu_kit
from perf.gpu.report import COLUMNS
from serving.engines import gpu_visible
from tests.conftest import ROOT

VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

# The kit runs on the interpreter that has torch, the tests' own; a server Python chosen with SERVER_PYTHON
# (make test PYTHON=...) changes nothing for it.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("SERVER_PYTHON")), reason="the kit runs on the tests' own Python, whatever SERVER_PYTHON is"
)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-kit") / "kit"
    # xz -1 builds faster than make gpu-kit's -6 (the payloads are cached in .cache/gpu-kit/ either way) and packs
    # larger: the limit holds all the same
    result = subprocess.run(
        [sys.executable, "-m", "perf.gpu_kit", "--out", str(out), "--python-version", VERSION, "--xz-level", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_the_kit_is_within_64_mib_with_only_this_pythons_stub(kit):
    assert gpu_kit.size(kit) <= 64 * 2**20
    assert sorted(p.name for p in (kit / "payload").iterdir()) == [
        "fallback.tar.xz",
        "perf_analyzer.tar.xz",
        "project.tar.xz",
        "site.tar.xz",
        "tritonserver.tar.xz",
        "vocab.txt",
    ]
    assert json.loads((kit / "kit.json").read_text())["python_version"] == VERSION
    listing = subprocess.run(
        ["tar", "-tJf", str(kit / "payload" / "tritonserver.tar.xz")], capture_output=True, text=True, check=True
    ).stdout
    assert set(re.findall(r"python_backend_stubs/([^/\n]+)/", listing)) == {VERSION}
    assert "libpython3" not in listing and "pytriton/__init__.py" in listing
    assert "bin/tritonserver" in listing


def test_run_sh_quick_in_the_cpu_fallback_prints_the_table_and_answers_as_the_pipeline(kit, tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "KIT_WORK": str(tmp_path / "work")}
    glibc = ROOT / ".perf-analyzer" / "glibc"  # perf_analyzer needs glibc >= 2.38: make perf-analyzer's loader
    if glibc.is_dir():
        env["PERF_ANALYZER_GLIBC"] = str(glibc)
    device = ["--device", "cpu"] if gpu_visible() else []  # without a GPU, the fallback is chosen by itself
    result = subprocess.run(
        ["bash", str(kit / "run.sh"), "--quick", "--out", str(out), *device],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert "| " + " | ".join(COLUMNS) + " |" in result.stdout
    table = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == 2 + 2 + 1  # the pipeline's two forms, concurrency 1 and 4, the long document
    assert all(line.count("|") == len(COLUMNS) + 1 for line in table)

    report = json.loads((out / "gpu-run.json").read_text())
    assert report["device"] == "cpu" and report["size"] == "tiny"
    assert report["environment"]["numpy"].startswith("1.")  # the kit's, ahead of the machine's
    assert report["parity"] == {
        "same": 16,
        "compared": 16,
        "share": 1.0,
        "contract": 1.0,
        "met": True,
        "non_finite": 0,
        "errors": 0,
    }
    assert report["preflight"]["problems"] == [] and report["preflight"]["device"] == "cpu"
    assert report["reexport"] == {"compared": 16, "changed": 16, "met": True}  # another checkpoint's answers
    # tritonserver killed behind the front (nginx, as make test installs it): the front answers again
    assert report["front"]["ran"] and report["front"]["met"], report["front"]
    assert report["front"]["failed"] == 0
    memory = report["served"]["rows"][0]["memory_mb"]
    assert set(memory) == {"tritonserver", "tokenizer", "encoder", "decoder"} and all(memory.values())
    for row in report["served"]["rows"]:
        assert row["failures"] == 0 and row["successes"] > 0 and row["qps"] > 0
        assert set(row["share"]) == {"tokenizer", "encoder", "decoder"} and sum(row["share"].values()) > 0.99
        assert all(v >= 1 for v in row["requests_per_execute"].values())
    assert report["pipeline"]["one_per_call"]["throughput_qps"] > 0
    assert report["pipeline"]["batched"]["throughput_qps"] > 0
    assert (out / "gpu-run.md").read_text().count("\n| ") == len(table) + 1
    assert "encoder: torch on cpu" in (out / "server.log").read_text()  # the GPU path's engine, on the CPU
