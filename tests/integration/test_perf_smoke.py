"""A few seconds of perf_analyzer against the embedded server: `make perf` completes, no request fails,
every request is answered, and the CSV, per-step breakdown, CPU per process and plot are written."""

import csv
import subprocess

from tests.conftest import ROOT


def test_make_perf_smoke_run_completes_without_errors(triton_server, tmp_path):
    out = tmp_path / "perf"
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "perf",
            f"URL={triton_server.grpc_url}",
            f"HTTP_URL={triton_server.http_url}",
            "CONCURRENCY=1:2:1",
            "INTERVAL_MS=1500",
            f"PERF_OUT={out}",
            "PERF_ARGS=--max-trials 10 --stability-percentage 1000 "  # what the run reports, not how steady
            f"--tokenizer {triton_server.repository / 'tokenizer' / '1' / 'tokenizer.json'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["Concurrency"]) for r in rows] == [1, 2]
    for row in rows:
        assert int(row["Server Failures"]) == 0
        assert int(row["Server Successes"]) > 0 and float(row["Inferences/Second"]) > 0
    with open(out.with_name("perf-breakdown.csv")) as f:
        breakdown = list(csv.DictReader(f))
    assert {(int(b["concurrency"]), b["model"]) for b in breakdown} == {
        (c, m) for c in (1, 2) for m in ("tokenizer", "encoder", "decoder")
    }
    # every request the ensemble answered went through each step exactly once
    for row in rows:
        c = int(row["Concurrency"])
        assert {int(b["requests"]) for b in breakdown if int(b["concurrency"]) == c} == {int(row["Server Successes"])}
    assert out.with_suffix(".png").stat().st_size > 0
    lines = result.stdout.strip().splitlines()
    cpu_table = lines.index(next(line for line in lines if line.startswith("CPU us per answered request")))
    assert lines[cpu_table - 1].split()[0] == "2"  # the perf table, then the CPU table
    # each server process's CPU per answered request, beside the bare tokenizer call on the same pairs
    with open(out.with_name("perf-cpu.csv")) as f:
        cpu = {(int(r["concurrency"]), r["process"]): r for r in csv.DictReader(f)}
    processes = ("tritonserver", "tokenizer_0_0", "encoder_0_0", "decoder_0_0", "outside the model step", "all")
    assert set(cpu) == {(c, p) for c in (1, 2) for p in processes}
    for (c, process), r in cpu.items():
        assert float(r["cpu_us_per_request"]) > 0 and float(r["x_bare_tokenizer"]) > 0, (c, process)
    outside = sum(float(cpu[(1, p)]["cpu_us_per_request"]) for p in ("tritonserver", "tokenizer_0_0", "decoder_0_0"))
    assert abs(float(cpu[(1, "outside the model step")]["cpu_us_per_request"]) - outside) < 0.5
