"""The OpenVINO engine of the encoder step (runtime.openvino_runner): in fp32 its logits are ONNX Runtime's on the
same exported graph; in bf16 they stay close, on a CPU with bf16 matrix units; on a CPU without them bf16 is
refused, naming the CPU and its flags."""

from __future__ import annotations

import pytest

from runtime.cpu import describe, matrix_units
from runtime.onnx_runner import OnnxQARunner
from runtime.openvino_runner import OpenVinoQARunner, UnsupportedPrecision, bf16_units
from tests.unit.test_torch_runner import assert_same_logits, onnx_file, packed, ragged_requests  # noqa: F401

openvino = pytest.importorskip("openvino")


def test_fp32_logits_equal_onnx_runtime_on_ragged_requests(onnx_file):  # noqa: F811
    requests = ragged_requests()
    expected, expected_tokens = OnnxQARunner(onnx_file, device="cpu", max_windows_per_run=8).run(packed(requests))
    runner = OpenVinoQARunner(onnx_file, precision="fp32", max_windows_per_run=8)
    got, tokens = runner.run(packed(requests))
    assert_same_logits(got, expected, requests)
    assert tokens == expected_tokens and runner.device == "cpu"


@pytest.mark.skipif(not bf16_units(), reason="this CPU has no bf16 matrix units")
def test_bf16_logits_stay_close_to_fp32(onnx_file):  # noqa: F811
    requests = ragged_requests()
    expected, _ = OnnxQARunner(onnx_file, device="cpu").run(packed(requests))
    runner = OpenVinoQARunner(onnx_file, precision="bf16", intra_op_threads=1)
    got, _ = runner.run(packed(requests))
    assert runner.precision == "bf16"
    assert_same_logits(got, expected, requests, atol=0.3)  # logits reach ~12; bf16 keeps 8 bits of mantissa


def test_bf16_is_refused_on_a_cpu_without_bf16_units(onnx_file, monkeypatch):  # noqa: F811
    real = openvino.Core.get_property

    def without_bf16(core, device, name):
        value = real(core, device, name)
        return [c for c in value if c != "BF16"] if name == "OPTIMIZATION_CAPABILITIES" else value

    monkeypatch.setattr(openvino.Core, "get_property", without_bf16)
    with pytest.raises(UnsupportedPrecision, match="AVX512-BF16") as refused:
        OpenVinoQARunner(onnx_file, precision="bf16")
    assert describe() in str(refused.value) and "ENGINE=onnxruntime" in str(refused.value)
    OpenVinoQARunner(onnx_file, precision="fp32")  # fp32 still serves there


def test_unknown_precisions_and_run_sizes_are_refused(onnx_file):  # noqa: F811
    with pytest.raises(ValueError, match="precision"):
        OpenVinoQARunner(onnx_file, precision="fp16")
    with pytest.raises(ValueError, match="max_windows_per_run"):
        OpenVinoQARunner(onnx_file, precision="fp32", max_windows_per_run=0)


def test_the_cpu_is_described_by_its_model_and_matrix_units(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8\n"
    )
    assert matrix_units(cpuinfo) == ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni")
    assert describe(cpuinfo) == "Intel(R) Xeon(R) Platinum 8480+ (amx_bf16, amx_int8, avx512_bf16, avx512_vnni)"
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx2\n")
    assert describe(cpuinfo) == "AMD EPYC (no bf16/int8 matrix units)"
    assert matrix_units(tmp_path / "missing") == ()
