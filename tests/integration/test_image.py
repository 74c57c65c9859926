"""What the image holds, started here as the containers start it (no Docker engine, no cluster, no GPU).

docker/Dockerfile is laid out (tests/integration/image.py: its COPYs and RUNs into a fresh environment of the
image's Python, no editable install, no checkout on its path or as its working directory) and served:

* with docker-compose.yml's ``triton-cpu`` entrypoint, command, environment and volume, asked a question over
  gRPC and checked against the pipeline, its healthcheck run inside it;
* with the ``triton`` (TensorRT) service's flags: every model but ``electra`` (Triton's onnxruntime backend and a
  GPU are not here) loads from the same layout, and the TensorRT config names what the export wrote;
* as the Kubernetes cpu overlay's pod: its args and environment, its startup, readiness and liveness probes and
  its preStop drain under load, then the kubelet's SIGTERM within the grace period.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from perf.inputs import long_document
from serving.export import copy_repository
from serving.export import main as export_main
from tests.cases import CASES
from tests.conftest import ROOT, as_list, assert_same_answers
from tests.integration.image import Container, Image, build

pytestmark = pytest.mark.integration

COMPOSE = PyCompose.from_yaml((ROOT / "docker-compose.yml").read_text()).to_dict()
HTTP, GRPC = 8000, 8001  # the containers' ports
READY_TIMEOUT_S = 300


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` (refused when NAME is unset)."""

    def one(match: re.Match) -> str:
        name, kind, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if env.get(name):
            return env[name]
        if "?" in kind:
            raise ValueError(f"compose refuses to start: {rest}")
        return rest if "-" in kind else ""

    return re.sub(r"\$\{(\w+)(:?[-?])?([^}]*)\}", one, value)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    build_args = COMPOSE["services"]["triton-cpu"]["build"]["args"]
    return build(ROOT / "docker" / "Dockerfile", ROOT, tmp_path_factory.mktemp("image"), build_args)


def exported(tmp_path_factory, checkpoint: Path, *args: str) -> Path:
    """The model repository as README says to export it for a service (``make export MODEL=... [VARIANT=...]``)."""
    repository = copy_repository(ROOT / "model_repository", tmp_path_factory.mktemp("models") / "model_repository")
    assert export_main(["--model", str(checkpoint), "--repository", str(repository), *args]) == 0
    return repository


def compose_container(image: Image, name: str, repository: Path, log: Path, **override) -> tuple[Container, str]:
    """The compose service ``name`` started from the layout: its entrypoint and command (``override``: flags
    replaced), its environment with a new admin key, its volume of the model repository."""
    service = COMPOSE["services"][name]
    key = secrets.token_hex(16)
    env = {"ELECTRA_QA_ADMIN_KEY": key}
    argv = [interpolate(a, env) for a in service["entrypoint"] + service.get("command", [])]
    for old, new in override.items():
        argv = [x for a in argv for x in (new if a == old else [a])]
    environment = {k: interpolate(str(v), env) for k, v in service["environment"].items()}
    (volume,) = [v for v in service["volumes"] if v.startswith("./model_repository:")]
    return Container(image, argv, environment, {volume.split(":")[1]: repository}, log), key


def wait_until(check, timeout_s: float, container: Container, what: str) -> float:
    """Poll ``check`` until it holds; how long it took."""
    started = time.monotonic()
    while not check():
        if not container.alive() or time.monotonic() - started > timeout_s:
            why = "the container exited" if not container.alive() else f"not within {timeout_s} s"
            pytest.fail(f"{what}: {why}; the container's log:\n{container.log.read_text()[-4000:]}")
        time.sleep(0.5)
    return time.monotonic() - started


def on_network(container: Container, *args: str, stdin: object) -> object:
    """``tests/integration/netns_client.py`` on the container's network."""
    client = container.on_network(
        [sys.executable, "-m", "tests.integration.netns_client", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = client.communicate(json.dumps(stdin), timeout=180)
    assert client.returncode == 0, err
    return json.loads(out)


def test_the_layout_has_the_project_installed_not_a_checkout_on_a_path(image):
    site = subprocess.run(
        [str(image.python), "-c", "import runtime, sys; print(runtime.__file__); print(sys.path)"],
        capture_output=True,
        text=True,
        cwd=image.host_path(image.workdir),
        env=image.environment(),
        check=True,
    ).stdout
    assert "site-packages" in site.splitlines()[0]
    assert str(ROOT) not in site
    assert not list(Path(site.splitlines()[0]).parents[1].glob("__editable__*"))
    assert "PYTHONPATH" not in image.env


@pytest.fixture(scope="module")
def compose_cpu(image, tmp_path_factory, tiny_checkpoint):
    repository = exported(tmp_path_factory, tiny_checkpoint)
    log = tmp_path_factory.mktemp("compose-cpu") / "triton-cpu.log"
    container, key = compose_container(image, "triton-cpu", repository, log)
    healthcheck = COMPOSE["services"]["triton-cpu"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD"
    wait_until(lambda: container.exec(healthcheck[1:]).returncode == 0, READY_TIMEOUT_S, container, "healthy")
    yield container
    container.stop()


def test_compose_cpu_service_answers_as_the_pipeline(compose_cpu, reference):
    pairs = [CASES["squad"], CASES["emoji"], CASES["long"]]
    got = on_network(compose_cpu, "ask", f"127.0.0.1:{GRPC}", stdin=pairs)
    for (question, context), answer in zip(pairs, got):
        assert_same_answers([tuple(answer)], as_list(reference(question=question, context=context)))


def test_compose_cpu_service_runs_without_a_path_variable(compose_cpu):
    log = compose_cpu.log.read_text()
    assert "ModuleNotFoundError" not in log and "PYTHONPATH" not in " ".join(compose_cpu.argv)
    assert str(ROOT) not in (compose_cpu.env.get("PATH", "") + compose_cpu.env.get("PYTHONPATH", ""))


def test_tensorrt_service_loads_every_model_but_electra_and_its_config_names_the_export(
    image, tmp_path_factory, tiny_checkpoint
):
    repository = exported(tmp_path_factory, tiny_checkpoint, "--variant", "tensorrt")
    config = text_format.Parse(
        (repository / "electra" / "configs" / "tensorrt.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert (repository / "electra" / "1" / config.default_model_filename).is_file()
    assert json.loads((repository / "electra" / "1" / "export.json").read_text())["variant"] == "tensorrt"
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    (volume,) = [v for v in COMPOSE["services"]["triton"]["volumes"] if v.startswith("./model_repository:")]
    assert accelerator.parameters["trt_engine_cache_path"].startswith(f"{volume.split(':')[1]}/electra/1/")

    log = tmp_path_factory.mktemp("compose-triton") / "triton.log"
    others = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file() and p.name != "electra")
    loads = [f"--load-model={name}" for name in others if name != "electra_qa"]  # the ensemble needs electra
    container, _ = compose_container(image, "triton", repository, log, **{"--load-model=*": loads})
    try:
        assert "--model-config-name=tensorrt" in container.argv
        wait_until(lambda: container.http_status(HTTP, "/v2/health/ready") == 200, READY_TIMEOUT_S, container, "ready")
        for name in ("tokenizer", "decoder"):
            assert container.http_status(HTTP, f"/v2/models/{name}/ready") == 200, name
    finally:
        container.stop()


def kubectl_kustomize(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the deploy/k8s overlays cannot be rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(NAME)`` from the container's environment."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


@pytest.fixture(scope="module")
def pod(image, tmp_path_factory, tiny_checkpoint):
    (deployment,) = [d for d in kubectl_kustomize("cpu") if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    key = secrets.token_hex(16)
    env = {}
    for variable in container["env"]:
        secret = variable.get("valueFrom", {}).get("secretKeyRef")
        env[variable["name"]] = key if secret else expand(variable["value"], env)
    repository = exported(tmp_path_factory, tiny_checkpoint)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    argv = image.entrypoint + [expand(a, env) for a in container.get("command", []) + container["args"]]
    log = tmp_path_factory.mktemp("pod") / "triton.log"
    running = Container(image, argv, env, {mounts["models"]: repository}, log)
    yield running, container, spec
    running.stop()


def probe(running: Container, container: dict, name: str) -> bool:
    """One run of the container's probe ``name``, as the kubelet runs it."""
    probe = container[name]
    if "exec" in probe:
        return running.exec(probe["exec"]["command"], timeout_s=probe["timeoutSeconds"]).returncode == 0
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return running.http_status(ports[probe["httpGet"]["port"]], probe["httpGet"]["path"]) == 200


def test_kubernetes_cpu_pod_probes_and_prestop_drain(pod, reference):
    running, container, spec = pod
    startup = container["startupProbe"]
    limit_s = startup["periodSeconds"] * startup["failureThreshold"]
    wait_until(lambda: probe(running, container, "startupProbe"), limit_s, running, "startup probe")
    wait_until(lambda: probe(running, container, "readinessProbe"), 60, running, "readiness probe")
    assert probe(running, container, "livenessProbe")

    # liveness fails past its memory bound: the same command with a bound below what tritonserver holds
    live = container["livenessProbe"]["exec"]["command"]
    bound = live.index("--max-memory-mb") + 1
    below = [*live[:bound], "1", *live[bound + 1 :]]
    failed = running.exec(below)
    assert failed.returncode == 1 and "private memory" in failed.stderr, failed.stderr

    question, context = CASES["squad"]
    (answer,) = on_network(running, "ask", f"127.0.0.1:{GRPC}", stdin=[[question, context]])
    assert_same_answers([tuple(answer)], as_list(reference(question=question, context=context)))

    # preStop under load: calls in flight when the ensemble is unloaded finish; later ones are refused clearly
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    settle_s = float(pre_stop[pre_stop.index("--settle-s") + 1])
    load = container_load(running, seconds=settle_s + 4)
    started = time.time()
    drained = running.exec(pre_stop, timeout_s=spec["terminationGracePeriodSeconds"])
    drain_s = time.time() - started
    calls = load.result()
    assert drained.returncode == 0 and "UNLOADING" not in drained.stdout, drained.stdout + drained.stderr
    failures = [c for c in calls if c["error"]]
    assert failures, "no call was refused after the drain"
    assert all(c["error"].startswith("ServerUnavailableError") for c in failures), failures[:3]
    # the hook unloads only after its settle time: no call failed before
    assert min(c["sent"] for c in failures) >= started + settle_s
    # a call admitted before the unload and answered after calls were already being refused was in flight
    # through the unload: it finished
    first_refused = min(c["done"] for c in failures)
    assert [c for c in calls if not c["error"] and c["done"] > first_refused], "no call was in flight at the unload"
    assert not probe(running, container, "readinessProbe")  # the ensemble is gone: not ready
    assert probe(running, container, "livenessProbe")  # but alive: no restart while draining

    exit_s = running.stop(grace_s=spec["terminationGracePeriodSeconds"] - drain_s)
    assert not running.alive()
    assert drain_s + exit_s < spec["terminationGracePeriodSeconds"]


class container_load:
    """Calls from the container's network for ``seconds``, four at a time, each a long document."""

    def __init__(self, running: Container, seconds: float):
        request = running.log.with_name("load-request.json")
        request.write_text(json.dumps(["Where was it shipped?", long_document(40_000)]))
        with open(request) as stdin:
            command = ["load", f"127.0.0.1:{GRPC}", str(seconds), "4"]
            self.client = running.on_network(
                [sys.executable, "-m", "tests.integration.netns_client", *command],
                cwd=ROOT,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

    def result(self) -> list[dict]:
        out, err = self.client.communicate(timeout=120)
        assert self.client.returncode == 0, err
        return json.loads(out)
