"""What make perf reports of the server's CPU (perf.process_cpu, perf.load_test) and what make instances derives
from it (perf.instances)."""

import csv
import os
import socket

import pytest

from perf import instances, load_test, process_cpu


def test_the_process_listening_on_a_port_is_found_and_its_cpu_time_read():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert process_cpu.server_pid(listener.getsockname()[1]) == os.getpid()
    before = process_cpu.cpu_seconds(os.getpid())
    for _ in range(1000):  # work until the kernel's clock ticks past it, however fast the machine
        sum(i * i for i in range(200_000))
        if process_cpu.cpu_seconds(os.getpid()) > before:
            break
    assert process_cpu.cpu_seconds(os.getpid()) > before
    assert process_cpu.cpu_seconds(2**22 + 1) == 0.0  # gone (or never there)


def test_stub_instances_are_named_by_their_model():
    assert process_cpu.Process(1, "tokenizer_0_3").model == "tokenizer"
    assert process_cpu.Process(1, "my_model_1_0").model == "my_model"
    assert process_cpu.Process(1, "tritonserver").model == "tritonserver"


def test_cpu_rows_give_each_process_its_share_and_the_sums_of_the_targets():
    per_process = process_cpu.per_request_us(
        {"tritonserver": 1.0, "tokenizer_0_0": 2.0, "encoder_0_0": 3.0, "decoder_0_0": 4.0},
        {"tritonserver": 1.3, "tokenizer_0_0": 2.4, "encoder_0_0": 3.5, "decoder_0_0": 4.2},
        1000,
    )
    assert per_process == {"tritonserver": 300.0, "tokenizer_0_0": 400.0, "encoder_0_0": 500.0, "decoder_0_0": 200.0}
    rows = {r["process"]: r for r in load_test.cpu_rows({32: per_process}, 200.0)}
    assert rows["outside the model step"]["cpu_us_per_request"] == 900.0
    assert rows["outside the model step"]["x_bare_tokenizer"] == 4.5
    assert rows["all"]["cpu_us_per_request"] == 1400.0 and rows["encoder_0_0"]["x_bare_tokenizer"] == 2.5


def test_instances_follow_the_measured_costs(tmp_path, capsys):
    path = tmp_path / "perf-cpu.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["concurrency", "process", "cpu_us_per_request", "x_bare_tokenizer"])
        writer.writeheader()
        for process, us in [
            ("tritonserver", 600),
            ("tokenizer_0_0", 300),
            ("tokenizer_0_1", 200),
            ("decoder_0_0", 400),
        ]:
            writer.writerow({"concurrency": 32, "process": process, "cpu_us_per_request": us, "x_bare_tokenizer": 1})
        writer.writerow({"concurrency": 32, "process": "all", "cpu_us_per_request": 1500, "x_bare_tokenizer": 1})
    assert instances.costs(path) == {"tritonserver": 600, "tokenizer": 500, "decoder": 400}
    result = instances.plan(instances.costs(path), cores=16, rate=None)
    assert result["sustainable_rate"] == pytest.approx(16 * 0.8 * 1e6 / 1500)  # ~8,533 requests/s
    # each step: ceil(rate * its us / 1e6 / 0.8) one-core instances
    assert result["instances"] == {"tokenizer": 6, "decoder": 5}
    assert instances.plan(instances.costs(path), cores=16, rate=1000)["instances"] == {"tokenizer": 1, "decoder": 1}
    assert instances.main(["--cpu", str(path), "--cores", "16"]) == 0
    assert "tokenizer/config.pbtxt: instance_group [ { count: 6 kind: KIND_CPU } ]" in capsys.readouterr().out


def test_on_a_gpu_host_the_model_steps_cpu_measured_on_a_cpu_is_left_out():
    costs = {"tritonserver": 600, "tokenizer": 500, "decoder": 400, "encoder": 3000}
    on_gpu = instances.plan(costs, cores=16, rate=None, gpu=True)
    assert on_gpu["sustainable_rate"] == pytest.approx(16 * 0.8 * 1e6 / 1500)
    assert instances.plan(costs, cores=16, rate=None)["sustainable_rate"] == pytest.approx(16 * 0.8 * 1e6 / 4500)


def test_the_gpu_hosts_pre_post_instances_are_what_the_measured_costs_give_16_cores():
    """configs/torch.pbtxt's tokenizer and decoder counts: make instances CORES=16 GPU=1 on the checked-in
    measurement of the GPU service's configs (make perf, perf/results/perf-torch-cpu.csv)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from tests.conftest import ROOT

    measured = instances.costs(ROOT / "perf" / "results" / "perf-torch-cpu.csv")
    planned = instances.plan(measured, cores=16, rate=None, gpu=True)["instances"]
    for step in ("tokenizer", "decoder"):
        text = (ROOT / "model_repository" / step / "configs" / "torch.pbtxt").read_text()
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
        assert config.instance_group[0].count == planned[step], step
