"""The container path, checked without a Docker engine: the compose file against the Compose
specification (compose-spec, a real validator), the Dockerfile's targets, and the GPU service's model-step config
with Triton's protobufs. What the image and the compose services start is in tests/integration/test_image.py."""

import re

import pytest
from compose_spec import PyCompose
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import ROOT

COMPOSE = (ROOT / "docker-compose.yml").read_text()
REPOSITORY = ROOT / "model_repository"


@pytest.fixture(scope="module")
def compose() -> dict:
    return PyCompose.from_yaml(COMPOSE).to_dict()


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_compose_file_is_valid_compose_specification(compose):
    assert set(compose["services"]) == {"triton", "triton-cpu", "proxy", "proxy-cpu", "sdk", "prometheus", "grafana"}


@pytest.mark.parametrize(
    "broken",
    [
        ("shm_size:", "shm_sizee:"),
        ("capabilities: [gpu]", "capabilities: gpu"),
        ("start_period: 5m", "start_period: soon"),
    ],
)
def test_compose_validator_rejects_a_broken_file(broken):
    with pytest.raises(ValueError):
        PyCompose.from_yaml(COMPOSE.replace(*broken))


def test_triton_service_runs_the_pinned_ngc_image_on_a_gpu_with_secure_flags(compose):
    triton = compose["services"]["triton"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"FROM nvcr\.io/nvidia/tritonserver:\$\{TRITON_TAG\}-py3", dockerfile)
    assert re.search(r"ARG TRITON_TAG=\d\d\.\d\d", dockerfile)
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert "gpu" in devices[0]["capabilities"]
    command = triton["entrypoint"] + triton["command"]
    assert command[:2] == ["/opt/nvidia/nvidia_entrypoint.sh", "tritonserver"]
    assert {
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--model-config-name=torch",
    } <= set(command)
    assert any(a.startswith("--grpc-restricted-protocol=") and "x-admin-key=" in a for a in command)
    assert triton["build"]["target"] == "gpu"
    for name in ("triton", "triton-cpu"):  # no step writes to the repository
        assert compose["services"][name]["volumes"] == ["./model_repository:/models:ro"]


def test_triton_service_has_shm_ports_healthcheck_and_a_long_enough_grace_period(compose):
    for name, proxy in (("triton", "proxy"), ("triton-cpu", "proxy-cpu")):
        service = compose["services"][name]
        # the ports are its proxy's, whose network namespace it joins: a Triton restart leaves them answering
        assert service["network_mode"] == f"service:{proxy}" and "ports" not in service
        assert service["depends_on"] == {proxy: {"condition": "service_started"}}
        assert {str(p) for p in compose["services"][proxy]["ports"]} == {"8000:8000", "8001:8001", "8002:8002"}
        assert "network_mode" not in compose["services"][proxy] and "depends_on" not in compose["services"][proxy]
        # what callers see: a question answered on Triton's own port, not /v2/health alone
        assert service["healthcheck"]["test"][1:5] == ["python3", "-m", "serving.admin", "live"]
        assert "http://127.0.0.1:8100" in service["healthcheck"]["test"]
        assert "1gb" in str(service["shm_size"]).lower() or int(service["shm_size"]) >= 2**28
        exit_timeout = int(next(a for a in service["entrypoint"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
        assert _seconds(service["stop_grace_period"]) > exit_timeout


def test_cpu_service_is_behind_a_profile_and_reserves_no_gpu(compose):
    cpu = compose["services"]["triton-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    # ENGINE unset: onnxruntime (encoder/configs/onnxruntime.pbtxt); openvino: encoder/configs/openvino.pbtxt
    assert cpu["command"] == ["--model-config-name=${ENGINE:-onnxruntime}"]
    assert cpu["entrypoint"] == compose["services"]["triton"]["entrypoint"]


def test_sdk_service_load_tests_the_triton_service(compose):
    sdk = compose["services"]["sdk"]
    assert sdk["image"].startswith("nvcr.io/nvidia/tritonserver:") and sdk["image"].endswith("-py3-sdk")
    assert (ROOT / "perf" / "perf_analyzer.sh").is_file()


def test_the_gpu_target_is_the_cpu_image_plus_the_pinned_torch_of_the_tests():
    """The Dockerfile's gpu target adds PyTorch (requirements-gpu.txt) to the server stage the cpu target is,
    the same release as requirements.txt's (its CPU build, which the tests run the torch engine on)."""
    from tests.integration.image import stages

    _, built = stages(ROOT / "docker" / "Dockerfile")
    froms = {name: base for name, base, _ in built}
    assert froms["gpu"] == froms["cpu"] == "server" and built[-1][0] == "cpu"  # cpu: docker build's default
    (gpu_steps,) = [steps for name, _, steps in built if name == "gpu"]
    assert any(k == "RUN" and "-r /opt/electra_qa/requirements-gpu.txt" in rest for k, rest in gpu_steps)

    def torch_pin(path):
        return re.search(r"^torch==(\S+)$", (ROOT / path).read_text(), re.M).group(1)

    assert torch_pin("requirements-gpu.txt") == torch_pin("requirements.txt")
    assert "torch" not in (ROOT / "requirements-server.txt").read_text()  # the cpu target has none


def test_gpu_variant_runs_the_torch_engine_in_the_python_backend_with_ragged_batches():
    """Windows of any length batch together (ragged) and the CUDA graphs' count is written where it is checked
    at load."""
    config = parse((REPOSITORY / "encoder" / "configs" / "torch.pbtxt").read_text())
    assert config.backend == "python" and config.parameters["engine"].string_value == "torch"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")
    assert config.input[0].allow_ragged_batch
    assert int(config.parameters["cuda_graphs"].string_value) > 0
    for model in ("tokenizer", "decoder"):  # pre/post sized for a GPU host
        variant = parse((REPOSITORY / model / "configs" / "torch.pbtxt").read_text())
        assert (
            variant.instance_group[0].count
            > parse((REPOSITORY / model / "config.pbtxt").read_text()).instance_group[0].count
        )


def _seconds(duration) -> float:
    if isinstance(duration, (int, float)):
        return duration / 1e6  # compose-spec's integer form is microseconds
    value = str(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value))


def test_the_proxys_grpc_body_limit_admits_every_request_within_the_servers_limits():
    conf = (ROOT / "deploy" / "k8s" / "base" / "nginx.conf").read_text()
    grpc = conf[conf.index("listen 8001") : conf.index("listen 8000")]
    limit_mib = int(re.search(r"client_max_body_size (\d+)m;", grpc).group(1))
    tokenizer = parse((REPOSITORY / "tokenizer" / "config.pbtxt").read_text())
    max_chars = int(tokenizer.parameters["max_request_chars"].string_value)
    assert 4 * max_chars < limit_mib * 2**20 <= 4 * 4 * max_chars  # UTF-8 at most 4 bytes a character
    assert f"larger than {limit_mib} MiB" in grpc
    # Triton listens on loopback only, where the proxy reaches it
    for service in ("triton", "triton-cpu"):
        entrypoint = PyCompose.from_yaml(COMPOSE).to_dict()["services"][service]["entrypoint"]
        assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(
            entrypoint
        )
        assert "--grpc-port=8101" in entrypoint and "server 127.0.0.1:8101;" in conf
