"""The GPU run kit's pieces that need no server: what it carries (pins, the slim tritonserver, the project's files),
the export without ONNX it serves from, the CPU fallback's engine switch, the statistics read over HTTP, and the
table and targets of perf/gpu_run.py (perf/gpu/)."""

import pytest

from perf import gpu_kit
from perf.gpu import STEPS
from perf.gpu import report as gpu_report
from perf.gpu import served as gpu_served
from perf.load_test import delta
from serving.export import ExportedFiles, copy_repository, export, is_current, read_record
from tests.conftest import ROOT


def test_pins_come_from_the_requirements_with_the_cards_transformers_and_a_hub_below_1():
    pins = gpu_kit.pins("3.12")
    assert pins["numpy"].startswith("1.")  # the stubs misread numpy 2
    assert pins["transformers"] == "4.57.6" and pins["tokenizers"] == "0.22.2"
    assert pins["huggingface-hub"].startswith("0.")  # transformers 4.57.6 requires < 1.0
    assert pins["nvidia-pytriton"] == "0.7.0"
    assert pins["perf-analyzer"] == "2.60.0"  # perf/install-perf-analyzer's


def test_the_3_13_stub_is_not_offered():
    with pytest.raises(gpu_kit.KitError, match="3.13"):
        gpu_kit.build(ROOT / "build" / "never", "3.13")


def test_tritonserver_keeps_only_the_stub_of_the_kits_python_and_no_bundled_libpython():
    keep = gpu_kit.tritonserver_filter("3.12")
    assert keep("pytriton/tritonserver/bin/tritonserver")
    assert keep("pytriton/tritonserver/backends/python/libtriton_python.so")
    assert keep("pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub")
    assert not keep("pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub")
    assert keep("nvidia_pytriton.libs/libtritonserver-717102f0.so")
    assert not keep("nvidia_pytriton.libs/libpython3-419a3a08.13.so.1.0")  # only the 3.13 stub links it
    assert not keep("pytriton/triton.py")  # the pytriton library itself is not needed: an empty package
    assert gpu_kit.tritonserver_filter("3.13")("nvidia_pytriton.libs/libpython3-419a3a08.13.so.1.0")


def test_project_files_are_what_the_server_and_the_run_need():
    files = gpu_kit.project_files()
    for needed in (
        "serving/serve.py",
        "runtime/torch_runner.py",
        "preprocessing/tokenize.py",
        "model_repository/encoder/configs/torch.pbtxt",
        "model_repository/encoder/1/model.py",
        "perf/gpu_run.py",
        "perf/load_test.py",
        "perf/data/long.json",
        "perf/install-perf-analyzer",
        "client/sync.py",  # every package of the project, as the image installs them (serving.server_packages)
    ):
        assert needed in files
    # of deploy/, the front the restart check runs tritonserver behind
    assert [f for f in files if f.startswith("deploy/")] == ["deploy/k8s/base/nginx.conf"]
    assert not [f for f in files if f.startswith(("tests/", "perf/results/", "docs/"))]
    exported = {str(p.relative_to(ROOT)) for p in ExportedFiles.of(ROOT / "model_repository").paths()}
    assert not [f for f in files if any(f.startswith(e) for e in exported)]


def test_export_without_onnx_writes_what_the_torch_engine_reads(tmp_path, tiny_checkpoint):
    repository = copy_repository(ROOT / "model_repository", tmp_path / "model_repository")
    files = ExportedFiles.of(repository)
    files.onnx_file.write_bytes(b"an earlier export's graph")
    record = export(str(tiny_checkpoint), repository, engine="torch", onnx=False)
    assert not files.onnx_file.exists()
    assert (files.checkpoint_dir / "config.json").is_file() and (files.checkpoint_dir / "model.safetensors").is_file()
    assert files.tokenizer_file.is_file()
    assert record.max_abs_diff is None and record.model_limits["vocab_size"] == 30522
    assert record.engines == ["torch"] and set(record.unrunnable) == {"onnxruntime", "openvino"}
    assert "exported without the ONNX graph" in record.unrunnable["openvino"]
    assert read_record(repository) == record
    assert not is_current(repository, str(tiny_checkpoint))  # the default (ONNX Runtime) configs need the graph


def test_statistics_deltas_read_triton_http_json():
    def stats(success, queue_ns, executions, windows, compute_ns):
        return {
            "encoder": {
                "name": "encoder",
                "execution_count": executions,
                "inference_count": windows,
                "inference_stats": {
                    "success": {"count": success, "ns": 0},
                    "queue": {"count": success, "ns": queue_ns},
                },
                "batch_stats": [{"batch_size": 4, "compute_infer": {"count": executions, "ns": compute_ns}}],
            }
        }

    d = delta(stats(10, 5000, 4, 30, 9000), stats(2, 1000, 1, 6, 3000), "encoder")
    assert (d["success_count"], d["queue_ns"], d["execution_count"], d["inference_count"], d["execution_ns"]) == (
        8,
        4000,
        3,
        24,
        6000,
    )


def report(device="gpu"):
    def step_row(q, c):
        return {
            "queue_us": q,
            "compute_input_us": 0,
            "compute_infer_us": c,
            "compute_output_us": 0,
            "requests_per_execution": 2.0,
            "inferences_per_compute_s": 12000.0,
        }

    def served(setup, qps, p50, p99, kind="questions"):
        breakdown = [{"model": m, **step_row(*t)} for m, t in zip(STEPS, ((10, 40), (100, 800), (10, 40)))]
        row = {
            "Inferences/Second": qps,
            "p50 latency": p50 * 1000,
            "p99 latency": p99 * 1000,
            "Server Successes": 100,
            "Server Failures": 0,
        }
        cpu_us = {
            "tritonserver": 600,
            "tokenizer_0_0": 300,
            "tokenizer_0_1": 200,
            "encoder_0_0": 700,
            "decoder_0_0": 400,
        }
        return gpu_served.served_row(setup, row, breakdown, 2048 if device == "gpu" else None, kind, cpu_us)

    return {
        "machine": "test",
        "device": device,
        "engine": "torch",
        "size": "base",
        "date": "today",
        "batch_size": 64,
        "served": {
            "startup_s": 30,
            "rows": [
                served("served, concurrency 16", 5000, 3, 8),
                served("served, concurrency 128", 7000, 18, 60),
                served("served, document", 5, 200, 220, "documents"),
            ],
        },
        "pipeline": {
            "one_per_call": {"throughput_qps": 100.0, "p50_ms": 10, "p99_ms": 12, "long_s": 4.0, "gpu_mib": 1500},
            "batched": {"throughput_qps": 400.0, "p50_ms": 160, "p99_ms": 170, "gpu_mib": 3000},
        },
        "parity": {"same": 64, "compared": 64, "share": 1.0, "contract": 0.99, "met": True},
    }


def test_the_table_has_every_column_and_row():
    r = report()
    r["targets"] = gpu_report.targets(r)
    text = gpu_report.render(r)
    assert "| " + " | ".join(gpu_report.COLUMNS) + " |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 5 and all(line.count("|") == len(gpu_report.COLUMNS) + 1 for line in rows)
    cells = [c.strip() for c in next(line for line in rows if "concurrency 128" in line).strip("|").split("|")]
    assert cells == [
        "served, concurrency 128",
        "7000.0",
        "18.0",
        "60.0",
        "70.0",
        "17.5",
        "5% / 90% / 5%",
        "2.0 / 2.0 / 2.0",
        "12000",
        "600 / 500 / 700 / 400",  # a step's instances summed
        "2048",
    ]
    assert "| 20.0 |" in next(line for line in rows if "document" in line)  # the pipeline's 4 s over 0.2 s
    assert "64/64 (100.0%)" in text


def test_targets_are_checked_on_the_gpu_only():
    r = report()
    lines = gpu_report.targets(r)
    assert any("questions/s with p99 <= 100 ms: 7000" in line and "met" in line for line in lines)
    assert any("one question per call: 70.0 (>= 60.0: met)" in line for line in lines)
    assert any("batched: 17.5 (>= 14.0: met)" in line for line in lines)
    assert any("share of server time (worst run): 10.0% (<= 10.0%: met)" in line for line in lines)
    assert any("document, seconds (p50): 0.200 (<= 0.250: met)" in line for line in lines)
    assert gpu_report.targets(report("cpu")) == []


def test_a_server_that_did_not_start_is_reported_in_the_table():
    r = report()
    r["served"] = {"startup_s": None, "rows": [], "errors": ["server: tritonserver did not start; see server.log"]}
    r["targets"] = gpu_report.targets(r)
    text = gpu_report.render(r)
    assert "the server did not start" in text and "- server: tritonserver did not start" in text
    assert "questions/s with p99 <= 100 ms: not measured" in text
