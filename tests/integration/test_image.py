"""What the image holds, started here as the containers start it (no Docker engine, no cluster, no GPU).

docker/Dockerfile is laid out (tests/integration/image.py: its COPYs and RUNs into a fresh environment of the
image's Python, no editable install, no checkout on its path or as its working directory) and served:

* with docker-compose.yml's ``triton-cpu`` entrypoint, command, environment and volume, asked a question over
  gRPC and checked against the pipeline, its healthcheck run inside it;
* the ``gpu`` target with the ``triton`` (GPU) service's flags, its model step on CPU stand-ins: the torch engine's
  config made CPU-ready (device and precision only), PyTorch's CUDA build stood in by its CPU build of the same
  release (this machine has it for Python 3.11 only, so that target is laid out on 3.11; the image's own Python
  is 3.10): answers, windows of many requests and lengths batched together, a read-only repository, a re-export
  served after a restart;
* as the Kubernetes cpu overlay's pod: its args and environment, its startup, readiness and liveness probes and
  its preStop drain under load, then the kubelet's SIGTERM within the grace period.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose

from runtime.openvino_runner import bf16_units
from serving.export import copy_repository
from serving.export import main as export_main
from testkit.cases import CASES
from testkit.inputs import long_document, squad_sized_pairs
from tests.conftest import ROOT, as_list, assert_same_answers
from tests.integration.image import Container, Image, build, stand_in
from tests.integration.raw import deep_json_body

pytestmark = pytest.mark.integration

COMPOSE = PyCompose.from_yaml((ROOT / "docker-compose.yml").read_text()).to_dict()
HTTP, GRPC = 8000, 8001  # the containers' ports (their proxy's)
# the nginx image's own command, its configuration file named (the path compose and the pod mount it at), and
# its stop signal (STOPSIGNAL SIGQUIT: a graceful stop)
NGINX_COMMAND = ["nginx", "-c", "/etc/nginx/nginx.conf", "-g", "daemon off;"]
NGINX_STOP = signal.SIGQUIT
READY_TIMEOUT_S = 300
BF16_UNITS = bf16_units()
MARGIN_S = 0.05  # the unload request's own way to Triton
# a call stamped as sent before the unload may reach Triton after it: the client serialising its document beside
# three others on a busy machine
REACH_S = 0.5


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


# PyPI's torch for the image's Python (3.10) is the CUDA build, gigabytes this machine does not fetch; pip takes the
# CPU build of the same release from this machine's wheels, which it has for this Python only
GPU_STAND_IN_PYTHON = "3.11"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    build_spec = COMPOSE["services"]["triton-cpu"]["build"]
    return build(
        ROOT / "docker" / "Dockerfile", ROOT, tmp_path_factory.mktemp("image"), build_spec["args"], build_spec["target"]
    )


@pytest.fixture(scope="module")
def gpu_image(tmp_path_factory) -> Image:
    """The GPU service's image (the Dockerfile's gpu target) on the CPU stand-ins."""
    build_spec = COMPOSE["services"]["triton"]["build"]
    args = {**build_spec["args"], "PYTHON_VERSION": GPU_STAND_IN_PYTHON}
    root = tmp_path_factory.mktemp("gpu-image")
    return build(ROOT / "docker" / "Dockerfile", ROOT, root, args, build_spec["target"], python=GPU_STAND_IN_PYTHON)


def exported(tmp_path_factory, checkpoint: Path, *args: str) -> Path:
    """The model repository as docs/deploy.md says to export it (``make export MODEL=... [ENGINE=...]``)."""
    repository = copy_repository(ROOT / "model_repository", tmp_path_factory.mktemp("models") / "model_repository")
    assert export_main(["--model", str(checkpoint), "--repository", str(repository), *args]) == 0
    return repository


def compose_container(
    image: Image,
    name: str,
    repository: Path,
    log: Path,
    variables: dict[str, str] | None = None,
    front: Container | None = None,
    **override,
) -> tuple[Container, str]:
    """The compose service ``name`` started from the layout: its entrypoint and command (``override``: flags
    replaced) with compose's ``variables`` set, its environment with a new admin key, its volume of the model
    repository, in its ``front``'s network namespace (``network_mode: service:<proxy>``; a namespace of its own
    for a test that does not need the front)."""
    service = COMPOSE["services"][name]
    key = secrets.token_hex(16)
    env = {"ELECTRA_QA_ADMIN_KEY": key, **(variables or {})}
    argv = [interpolate(a, env) for a in service["entrypoint"] + service.get("command", [])]
    for old, new in override.items():
        argv = [x for a in argv for x in (new if a == old else [a])]
    environment = {k: interpolate(str(v), env) for k, v in service["environment"].items()}
    (volume,) = [v for v in service["volumes"] if v.startswith("./model_repository:")]
    _, inside, *mode = volume.split(":")
    read_only = [inside] if mode == ["ro"] else []
    if front is not None:
        assert service["network_mode"] == f"service:{front.service}"
    container = Container(image, argv, environment, {inside: repository}, log, network_of=front, read_only=read_only)
    return container, key


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


def compose_proxy(name: str, log: Path, inference_keys: list[str] = ()) -> Container:
    """The compose proxy service ``name``, its configuration mounted, in a network namespace of its own: the one
    its Triton service joins, and whose ports it publishes. ``inference_keys``: the HTTP/JSON inference keys an
    operator gives it (in /etc/nginx/inference-keys/, as docs/deploy.md says to mount them)."""
    service = COMPOSE["services"][name]
    (volume,) = service["volumes"]
    source, target, _ = volume.split(":")
    image = stand_in(log.parent / "nginx-image", NGINX_STOP)
    etc = log.parent / f"{name}-etc-nginx"  # stands for the image's /etc/nginx
    (etc / "inference-keys").mkdir(parents=True, exist_ok=True)
    (etc / "inference-keys" / "operator.keys").write_text("".join(f'"{key}" 1;\n' for key in inference_keys))
    binds = {"/etc/nginx": etc}
    return Container(image, NGINX_COMMAND, {}, {target: ROOT / source}, log, service=name, binds=binds)


def test_compose_cpu_service_behind_its_proxy(image, tmp_path_factory, tiny_checkpoint, reference):
    repository = exported(tmp_path_factory, tiny_checkpoint)
    workdir = tmp_path_factory.mktemp("compose-cpu")
    key = secrets.token_hex(16)
    proxy = compose_proxy("proxy-cpu", workdir / "proxy-cpu.log", inference_keys=[key])
    triton, _ = compose_container(image, "triton-cpu", repository, workdir / "triton-cpu.log", front=proxy)
    healthcheck = COMPOSE["services"]["triton-cpu"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD"
    try:
        wait_until(lambda: triton.exec(healthcheck[1:]).returncode == 0, READY_TIMEOUT_S, triton, "healthy")
        wait_until(lambda: proxy.http_status(HTTP, "/v2/health/ready") == 200, 30, proxy, "the proxy")

        # questions through the proxy's gRPC port, answered as the pipeline answers them
        pairs = [CASES["squad"], CASES["emoji"], CASES["long"]]
        got = on_network(proxy, "ask", f"127.0.0.1:{GRPC}", stdin=pairs)
        for (question, context), answer in zip(pairs, got):
            assert_same_answers([tuple(answer)], as_list(reference(question=question, context=context)))
        assert "ModuleNotFoundError" not in triton.log.read_text()
        assert str(ROOT) not in triton.env.get("PATH", "") and "PYTHONPATH" not in triton.env

        # Triton listens on loopback only; what callers send reaches it through the proxy's bounds
        assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(
            triton.argv
        )
        for _ in range(2):  # the body that crashes tritonserver's JSON parser never reaches it without a key
            assert proxy.http_status(HTTP, "/v2/models/electra_qa/infer", deep_json_body(200_000)) == 403
        assert proxy.http_status(HTTP, "/v2/models/electra_qa/infer", deep_json_body(10)) == 403  # without a key
        # HTTP/JSON inference for callers the operator gave a key: answered; without it, refused before Triton
        question, context = CASES["squad"]
        body = json.dumps(
            {
                "inputs": [
                    {"name": "question", "shape": [1], "datatype": "BYTES", "data": [question]},
                    {"name": "context", "shape": [1], "datatype": "BYTES", "data": [context]},
                ]
            }
        ).encode()
        infer = "/v2/models/electra_qa/infer"
        status, answered = proxy.http(HTTP, infer, body, {"x-inference-key": key, "Content-Type": "application/json"})
        assert status == 200, answered
        outputs = {o["name"]: o["data"] for o in json.loads(answered)["outputs"]}
        (expected,) = as_list(reference(question=question, context=context))
        assert (outputs["answer"][0], outputs["start"][0], outputs["end"][0]) == (
            expected["answer"],
            expected["start"],
            expected["end"],
        )
        assert proxy.http(HTTP, infer, body, {"x-inference-key": key[::-1]})[0] == 403
        assert proxy.http(HTTP, infer, body)[0] == 403
        assert proxy.http(HTTP, "/v2/repository/index", b"{}", {"x-inference-key": key})[0] == 403
        # a body announced at 2 GB is refused from its headers, with a key or without: nothing of it is held
        assert on_network(proxy, "unfinished", f"127.0.0.1:{HTTP}", stdin=None).startswith("HTTP/1.1 413")
        assert on_network(proxy, "unfinished", f"127.0.0.1:{HTTP}", key, stdin=None).startswith("HTTP/1.1 413")
        refused = on_network(proxy, "large", f"127.0.0.1:{GRPC}", str(17 * 2**20), stdin=None)
        assert refused.startswith("InvalidInputError") and "16 MiB" in refused, refused
        # a compressed message never reaches Triton, which would inflate it past every bound; nor does a stream
        compressed = on_network(proxy, "compressed", f"127.0.0.1:{GRPC}", stdin=None)
        assert compressed == (
            "StatusCode.UNIMPLEMENTED: compressed messages (grpc-encoding gzip) are not accepted: send them "
            "uncompressed"
        )
        streamed = on_network(proxy, "streamed", f"127.0.0.1:{GRPC}", stdin=None)
        assert "streaming inference is not served here: call ModelInfer" in streamed, streamed
        # one client with 256 calls at once on one channel, no retries: the per-client bound lets them all in
        crowd = on_network(proxy, "concurrent", f"127.0.0.1:{GRPC}", "256", stdin=None)
        assert crowd == {"answered": 256, "errors": []}, crowd["errors"][:3]
        held = on_network(proxy, "idle", f"127.0.0.1:{GRPC}", "5000", "12", stdin=None)
        assert held == {"answered": True, "open_after": 0}  # idle connections are cut after 10 s
        assert proxy.http_status(8002, "/metrics") == 200

        # Triton restarted (a crash, a memory restart): the ports are the proxy's, which stays; a caller sees
        # UNAVAILABLE meanwhile (retried by TritonQA), then answers again through the same front
        triton.stop()
        assert on_network(proxy, "large", f"127.0.0.1:{GRPC}", "10", stdin=None).startswith("ServerUnavailableError")
        triton, _ = compose_container(image, "triton-cpu", repository, workdir / "triton-cpu-2.log", front=proxy)
        wait_until(lambda: triton.exec(healthcheck[1:]).returncode == 0, READY_TIMEOUT_S, triton, "healthy again")
        (answer,) = on_network(proxy, "ask", f"127.0.0.1:{GRPC}", stdin=[CASES["squad"]])
        assert triton.alive() and proxy.alive()
    finally:
        triton.stop()
        proxy.stop()


def test_compose_cpu_service_on_openvino_runs_bf16_in_the_images_python(image, tmp_path_factory, tiny_checkpoint):
    """``ENGINE=openvino``: the image's own Python runs the model step on OpenVINO in bf16 where the CPU
    has bf16 matrix units, and refuses to start, naming the CPU, where it has none."""
    repository = exported(tmp_path_factory, tiny_checkpoint)
    workdir = tmp_path_factory.mktemp("compose-cpu-openvino")
    triton, _ = compose_container(image, "triton-cpu", repository, workdir / "triton.log", {"ENGINE": "openvino"})
    try:
        assert "--model-config-name=openvino" in triton.argv
        if not BF16_UNITS:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while triton.alive() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not triton.alive(), "a CPU without bf16 units: the server should have refused to start"
            assert "precision bf16 needs a CPU with bf16 matrix units" in triton.log.read_text()
            return
        healthcheck = COMPOSE["services"]["triton-cpu"]["healthcheck"]["test"]
        wait_until(lambda: triton.exec(healthcheck[1:]).returncode == 0, READY_TIMEOUT_S, triton, "healthy")
        question, context = CASES["squad"]
        ((text, _, start, end),) = on_network(triton, "ask", "127.0.0.1:8101", stdin=[(question, context)])
        assert context[start:end] == text
        assert "encoder: openvino on cpu, bf16" in triton.log.read_text()
    finally:
        triton.stop()


def files_of(repository: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file in the repository but Python's byte-code caches."""
    return {
        str(p.relative_to(repository)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in repository.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def batched_run(triton: Container, key: str, pairs: list, concurrency: int) -> dict:
    """``pairs`` asked ``concurrency`` at a time on Triton's own gRPC port, and what the model step ran meanwhile."""
    http = int(next(a for a in triton.argv if a.startswith("--http-port=")).split("=")[1])
    grpc = int(next(a for a in triton.argv if a.startswith("--grpc-port=")).split("=")[1])
    command = ["batched", f"127.0.0.1:{grpc}", f"http://127.0.0.1:{http}", key, str(concurrency)]
    return on_network(triton, *command, stdin=pairs)


def test_compose_gpu_service_on_cpu_stand_ins_batches_every_length_and_only_reads_its_repository(
    gpu_image, tmp_path_factory, tiny_checkpoint, reference
):
    """docker compose up triton's code path, here on the CPU: the torch engine in the Python backend with the
    GPU variants of every step (configs/torch.pbtxt: its length buckets, batches and CUDA graphs' count as on the
    GPU; the tokenizer's and decoder's instances of a GPU host), behind its proxy. Windows of concurrent requests
    batch together whatever their lengths (Triton's statistics: windows per model execution at concurrency 64),
    the read-only repository is never written, and a re-export is what the restarted service serves."""
    from serving.configs import torch_engine_on_cpu
    from testkit.checkpoints import build_random_checkpoint

    repository = exported(tmp_path_factory, tiny_checkpoint)
    torch_engine_on_cpu(repository, pre_post="gpu-host")
    before = files_of(repository)
    workdir = tmp_path_factory.mktemp("compose-gpu")
    healthcheck = COMPOSE["services"]["triton"]["healthcheck"]["test"]

    proxy = compose_proxy("proxy", workdir / "proxy.log")

    def start(log: str) -> tuple[Container, str]:
        triton, key = compose_container(gpu_image, "triton", repository, workdir / f"{log}.log", front=proxy)
        try:
            wait_until(lambda: triton.exec(healthcheck[1:]).returncode == 0, READY_TIMEOUT_S, triton, "healthy")
        except BaseException:
            triton.stop()
            raise
        return triton, key

    try:
        triton, key = start("triton")
        try:
            assert "--model-config-name=torch" in triton.argv
            log = triton.log.read_text()
            assert "encoder: torch on cpu, fp32" in log and "ModuleNotFoundError" not in log
            pairs = [CASES["squad"], CASES["emoji"], CASES["long"]]
            got = on_network(proxy, "ask", f"127.0.0.1:{GRPC}", stdin=pairs)
            for (question, context), answer in zip(pairs, got):
                assert_same_answers([tuple(answer)], as_list(reference(question=question, context=context)))

            # SQuAD-sized questions, then long documents among them: every window of a request runs with other
            # requests' windows, of other lengths
            squad = squad_sized_pairs(200) * 6
            mixed = [(q, long_document(20_000)) if i % 16 == 0 else (q, c) for i, (q, c) in enumerate(squad)]
            for name, load in (("SQuAD-sized", squad), ("mixed lengths", mixed)):
                ran = batched_run(triton, key, load, concurrency=64)
                assert not [a for a in ran["answers"] if isinstance(a, str)][:3], name
                assert ran["windows"] >= len(load), name
                assert ran["windows"] / ran["executions"] >= 16, f"{name}: {ran}"
        finally:
            triton.stop()
        assert files_of(repository) == before  # the repository is only read

        # a re-export of another checkpoint into the same repository, then a restart behind the same front: the
        # new checkpoint's answers, not the first's
        other = build_random_checkpoint(workdir / "other-checkpoint", "tiny", seed=1)
        assert export_main(["--model", str(other), "--repository", str(repository)]) == 0
        from transformers import pipeline

        other_reference = pipeline("question-answering", model=str(other), tokenizer=str(other), device=-1)
        triton, _ = start("triton-reexported")
        try:
            pairs = list(CASES.values())
            got = on_network(proxy, "ask", f"127.0.0.1:{GRPC}", stdin=pairs)
            firsts = []
            for (question, context), answer in zip(pairs, got):
                assert_same_answers([tuple(answer)], as_list(other_reference(question=question, context=context)))
                firsts.append(as_list(reference(question=question, context=context))[0])
            assert [tuple(a[2:]) for a in got] != [(f["start"], f["end"]) for f in firsts]
        finally:
            triton.stop()
    finally:
        proxy.stop()


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


def container_env(container: dict, key: str) -> dict[str, str]:
    """A container's environment as the kubelet sets it: values expanded, the Secret's key stood in by ``key``."""
    env = {}
    for variable in container.get("env", []):
        secret = variable.get("valueFrom", {}).get("secretKeyRef")
        env[variable["name"]] = key if secret else expand(variable["value"], env)
    return env


@pytest.fixture(scope="module")
def pod(image, tmp_path_factory, tiny_checkpoint):
    """The onnxruntime overlay's pod: its triton container, then its proxy container in the same network namespace."""
    (deployment,) = [d for d in kubectl_kustomize("onnxruntime") if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    assert set(containers) == {"triton", "proxy"}
    triton, proxy = containers["triton"], containers["proxy"]
    env = container_env(triton, secrets.token_hex(16))
    repository = exported(tmp_path_factory, tiny_checkpoint)
    mounts = {m["name"]: m["mountPath"] for m in triton["volumeMounts"]}
    argv = image.entrypoint + [expand(a, env) for a in triton.get("command", []) + triton["args"]]
    workdir = tmp_path_factory.mktemp("pod")
    running = {"triton": Container(image, argv, env, {mounts["models"]: repository}, workdir / "triton.log")}
    assert "command" not in proxy and "args" not in proxy  # the nginx image's own command
    (config,) = [m for m in proxy["volumeMounts"] if m["name"] == "proxy-config"]
    assert config["subPath"] == "nginx.conf"  # the ConfigMap made from deploy/k8s/base/nginx.conf
    running["proxy"] = Container(
        stand_in(workdir / "nginx-image", NGINX_STOP),
        NGINX_COMMAND,
        container_env(proxy, ""),
        {config["mountPath"]: ROOT / "deploy" / "k8s" / "base" / "nginx.conf"},
        workdir / "proxy.log",
        network_of=running["triton"],
    )
    yield running, containers, spec
    for name in ("proxy", "triton"):
        running[name].stop()


def probe(running: Container, container: dict, name: str, ports: dict[str, int]) -> bool:
    """The container's probe ``name`` as the kubelet judges it (``ports``: the pod's, by name): failed only when
    its ``failureThreshold`` runs in a row fail (one slow run on a busy machine fails no pod)."""
    return any(probe_once(running, container[name], ports) for _ in range(container[name].get("failureThreshold", 3)))


def probe_once(running: Container, probe: dict, ports: dict[str, int]) -> bool:
    if "exec" in probe:
        return running.exec(probe["exec"]["command"], timeout_s=probe["timeoutSeconds"]).returncode == 0
    if "tcpSocket" in probe:
        port = probe["tcpSocket"]["port"]
        return running.tcp_open(ports.get(port, port))
    port = probe["httpGet"]["port"]
    return running.http_status(ports.get(port, port), probe["httpGet"]["path"]) == 200


def test_kubernetes_onnxruntime_pod_probes_and_prestop_drain(pod, reference):
    running, containers, spec = pod
    ports = {p["name"]: p["containerPort"] for c in containers.values() for p in c.get("ports", [])}
    triton, container = running["triton"], containers["triton"]
    startup = container["startupProbe"]
    limit_s = startup["periodSeconds"] * startup["failureThreshold"]
    wait_until(lambda: probe_once(triton, startup, ports), limit_s, triton, "startup probe")
    for name, one in running.items():
        ready = partial(probe, one, containers[name], "readinessProbe", ports)
        wait_until(ready, 60, one, f"{name} readiness")
        assert probe(one, containers[name], "livenessProbe", ports), name

    # liveness fails past its memory bound: the same command with a bound below what tritonserver holds
    live = container["livenessProbe"]["exec"]["command"]
    bound = live.index("--max-memory-mb") + 1
    below = [*live[:bound], "1", *live[bound + 1 :]]
    failed = triton.exec(below)
    assert failed.returncode == 1 and "private memory" in failed.stderr, failed.stderr

    question, context = CASES["squad"]
    (answer,) = on_network(triton, "ask", f"127.0.0.1:{GRPC}", stdin=[[question, context]])
    assert_same_answers([tuple(answer)], as_list(reference(question=question, context=context)))

    # termination under load: both containers' preStop hooks at once, as the kubelet runs them; calls in flight
    # when the ensemble is unloaded finish, later ones are refused clearly
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    settle_s = float(pre_stop[pre_stop.index("--settle-s") + 1])
    load = container_load(triton, seconds=settle_s + 15)  # past both hooks, however long they take to start
    started = time.time()
    with ThreadPoolExecutor(2) as hooks:
        runs = {
            name: hooks.submit(one.exec, containers[name]["lifecycle"]["preStop"]["exec"]["command"], 60)
            for name, one in running.items()
        }
        drained, quit_proxy = runs["triton"].result(), runs["proxy"].result()
    assert drained.returncode == 0 and "UNLOADING" not in drained.stdout, drained.stdout + drained.stderr
    assert quit_proxy.returncode == 0, quit_proxy.stderr
    # then each container's stop signal: the proxy stops gracefully while calls are still coming
    grace_s = spec["terminationGracePeriodSeconds"]
    proxy_stopped = running["proxy"].stop(grace_s=grace_s - (time.time() - started))
    calls = load.result()
    failures = [c for c in calls if c["error"]]
    assert failures, "no call was refused after the drain"
    assert all(c["error"].startswith("ServerUnavailableError") for c in failures), failures[:3]
    # the hooks act only after their settle time: no call failed before
    # calls in flight when the ensemble was unloaded (the hook says when: just before it asks) finished; only
    # calls sent after it are refused
    unloaded_at = datetime.fromisoformat(re.search(r"unloading \S+ at (\S+)", drained.stdout).group(1)).timestamp()
    assert not [c for c in failures if c["sent"] < unloaded_at - REACH_S][:3], "a call sent before the unload failed"
    spanning = [c for c in calls if not c["error"] and c["sent"] < unloaded_at and c["done"] > unloaded_at + MARGIN_S]
    assert spanning, "no call was in flight through the unload"
    # the ensemble is gone: the pod is not ready, and Triton itself says so; alive, so no restart while draining
    assert not probe(triton, container, "readinessProbe", ports)
    http = next(a for a in container["args"] if a.startswith("--http-port=")).split("=")[1]
    assert triton.http_status(int(http), container["readinessProbe"]["httpGet"]["path"]) != 200
    assert probe(triton, container, "livenessProbe", ports)

    # the kubelet's SIGKILL comes at the end of the pod's grace period: both exited on their stop signal before it
    triton_stopped = triton.stop(grace_s=grace_s - (time.time() - started))
    assert not any(one.alive() for one in running.values())
    assert triton_stopped and proxy_stopped


class container_load:
    """Calls from the container's network for ``seconds``, four at a time, each a document of 60,000 characters
    (~66 windows, a few tenths of a second: calls are surely in flight when the ensemble is unloaded); a call a
    step's budget refuses as overload, on a machine busy with the preStop hooks, is sent again."""

    def __init__(self, running: Container, seconds: float):
        request = running.log.with_name("load-request.json")
        request.write_text(json.dumps(["Where was it shipped?", long_document(60_000)]))
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
