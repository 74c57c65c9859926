"""deploy/: the Kubernetes overlays rendered with ``kubectl kustomize``, validated against the Kubernetes API
schemas offline (kubernetes-validate) and scanned by checkov (accepted findings: deploy/k8s/checkov.yaml);
their agreement with docker-compose.yml and BENCHMARKS.md; the compose monitoring profile and the Grafana
dashboard. No cluster, no Docker engine."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from client import ENSEMBLE
from tests.conftest import ROOT
from tests.monitoring import (
    ADAPTER_VALUES,
    DASHBOARD,
    GPU_ONLY_METRICS,
    adapter_rules,
    dashboard,
    dashboard_queries,
    metric_names,
)

K8S = ROOT / "deploy" / "k8s"
MONITORING = ROOT / "deploy" / "monitoring"
OVERLAYS = ("torch", "onnxruntime", "openvino")  # named by their engine (runtime/engines.py)
# the oldest Kubernetes minor these manifests are meant for, and the newest schemas kubernetes-validate ships
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))
COMPOSE = PyCompose.from_yaml((ROOT / "docker-compose.yml").read_text()).to_dict()
QUEUE_METRIC, LOAD_METRIC = "electra_qa_queue_us_per_request", "electra_qa_windows_per_second"


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip(
            "kubectl is not installed: the deploy/k8s overlays cannot be rendered (install kubectl, which "
            "bundles kustomize, to run these checks)"
        )
    return path


def kustomize(directory: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Every overlay, and the torch overlay with each component: its repository from object storage, HTTP/JSON
    inference for callers with a key."""
    renders = {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}
    for component in ("object-storage", "http-inference"):
        composed = tmp_path_factory.mktemp(component)
        up = Path(os.path.relpath(K8S, composed))  # kustomize takes relative paths only
        (composed / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [str(up / "overlays" / "torch")],
                    "components": [str(up / "components" / component)],
                }
            )
        )
        renders[f"torch+{component}"] = kustomize(composed)
    return renders


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def container(docs: list[dict], name: str = "triton") -> dict:
    """The Deployment's container ``name``: triton, or proxy (its front, the only one with ports)."""
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert sorted(c["name"] for c in containers) == ["proxy", "triton"]
    return next(c for c in containers if c["name"] == name)


# --- rendering, schemas, security scan -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_deployment(rendered, overlay):
    kinds = sorted(d["kind"] for d in rendered[overlay])
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "ConfigMap",
        ]
    )
    assert {d["metadata"].get("namespace") for d in rendered[overlay] if d["kind"] != "Namespace"} == {"electra-qa"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(rendered, version):
    for name, docs in rendered.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(
                    f"{name}: {doc['kind']}/{doc['metadata']['name']} is not valid for Kubernetes "
                    f"{version}: {error.message} at {'/'.join(map(str, error.path))}"
                )


@pytest.mark.parametrize("breakage", ["unknown field", "wrong type"])
def test_schema_validation_rejects_a_broken_deployment(rendered, breakage):
    deployment = copy.deepcopy(one(rendered["torch"], "Deployment"))
    pod = deployment["spec"]["template"]["spec"]
    if breakage == "unknown field":
        pod["terminationGracePeriod"] = 45
    else:
        next(c for c in pod["containers"] if "ports" in c)["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_checkov_finds_nothing_beyond_the_accepted_findings(rendered, tmp_path):
    if not CHECKOV.is_file():
        pytest.skip(f"checkov is not installed at {CHECKOV}: run `make checkov` (make test does)")
    for name, docs in rendered.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(docs))
    # a canary, so that a scan that checks nothing cannot pass: the torch render with a writable root
    # filesystem and privilege escalation
    canary = copy.deepcopy(rendered["torch"])
    security = container(canary)["securityContext"]
    security["readOnlyRootFilesystem"], security["allowPrivilegeEscalation"] = False, True
    (tmp_path / "canary.yaml").write_text(yaml.safe_dump_all(canary))
    result = subprocess.run(
        [str(CHECKOV), "--config-file", str(K8S / "checkov.yaml"), "-d", str(tmp_path), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert [r["check_type"] for r in reports] == ["kubernetes"]
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0 and summary["passed"] > 0
    failed = [
        (Path(f["file_path"]).stem, f["check_id"], f["check_name"]) for f in reports[0]["results"]["failed_checks"]
    ]
    assert [f for f in failed if f[0] != "canary"] == [], "fix these, or accept them in deploy/k8s/checkov.yaml"
    assert {"CKV_K8S_20", "CKV_K8S_22"} <= {check for file, check, _ in failed if file == "canary"}


def test_every_accepted_checkov_finding_is_justified():
    config = (K8S / "checkov.yaml").read_text()
    skipped = yaml.safe_load(config)["skip-check"]
    assert skipped, "no accepted findings: drop skip-check"
    for check in skipped:
        comment = re.search(rf"((?:^  # .*\n)+)  - {check}\n", config, re.M)
        assert comment and len(comment.group(1)) > 80, f"{check} is accepted without a justification above it"


# --- what the Deployment runs ----------------------------------------------------------------------------


def compose_command(service: str) -> list[str]:
    """``tritonserver`` and its arguments as a compose service runs them: the shared entrypoint's (after the NGC
    image's own entrypoint script) and its command's."""
    service = COMPOSE["services"][service]
    assert service["entrypoint"][:2] == ["/opt/nvidia/nvidia_entrypoint.sh", "tritonserver"]
    return service["entrypoint"][1:] + service["command"]


def variables_named(arg: str) -> str:
    """An argument with its variables written one way: Kubernetes' $(NAME) and compose's ${NAME},
    ${NAME:?error} or ${NAME:-default} all become ${NAME}."""
    return re.sub(r"\$\((\w+)\)|\$\{(\w+)(?::?[-?][^}]*)?\}", lambda m: f"${{{m.group(1) or m.group(2)}}}", arg)


@pytest.mark.parametrize(
    ("overlay", "service"), [("torch", "triton"), ("onnxruntime", "triton-cpu"), ("openvino", "triton-cpu")]
)
def test_tritonserver_flags_mirror_docker_compose(rendered, overlay, service):
    """The same flags (their order does not matter to tritonserver), the engine's variable set as the overlay
    names it: the overlay's ENGINE, compose's ENGINE for the CPU service (onnxruntime when unset)."""
    triton = container(rendered[overlay])
    env = {e["name"]: e.get("value") for e in triton["env"]}
    assert env["MODEL_REPOSITORY"] == "/models" and env["ENGINE"] == overlay
    args = [
        variables_named(a.replace("$(MODEL_REPOSITORY)", "/models").replace("$(ENGINE)", overlay))
        for a in triton["args"]
    ]
    command = [variables_named(re.sub(r"\$\{ENGINE(:-\w+)?\}", overlay, a)) for a in compose_command(service)]
    assert args[0] == "tritonserver" and sorted(args) == sorted(command), (
        "keep deploy/k8s (base args, the overlay's ENGINE) and docker-compose.yml alike"
    )
    assert {
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--metrics-config=summary_latencies=true",
        f"--model-config-name={overlay}",
    } <= set(args)


def test_one_word_chooses_the_model_step_in_compose_and_kubernetes(rendered):
    """ENGINE: each overlay is named by its engine and sets it; compose's CPU service takes it (onnxruntime when
    unset), its GPU service runs torch; each names a config file of the model step that exists. The openvino
    overlay differs from onnxruntime's in that, its label and its autoscaling target only."""
    from runtime.engines import ENGINES

    assert {p.name for p in (K8S / "overlays").iterdir()} == set(ENGINES)
    assert "--model-config-name=${ENGINE:-onnxruntime}" in COMPOSE["services"]["triton-cpu"]["command"]
    assert "--model-config-name=torch" in COMPOSE["services"]["triton"]["command"]
    for engine in OVERLAYS:
        assert (ROOT / "model_repository" / "encoder" / "configs" / f"{engine}.pbtxt").is_file()
    onnxruntime, openvino = (copy.deepcopy(rendered[o]) for o in ("onnxruntime", "openvino"))
    for docs, engine in ((onnxruntime, "onnxruntime"), (openvino, "openvino")):
        triton = container(docs)
        assert "--model-config-name=$(ENGINE)" in triton["args"]
        (variable,) = [e for e in triton["env"] if e["name"] == "ENGINE"]
        assert variable["value"] == engine
        variable["value"] = None
        labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert labels.pop("electra-qa/engine") == engine
        one(docs, "HorizontalPodAutoscaler")["spec"].pop("metrics")
    assert openvino == onnxruntime


def test_variables_are_compared_whatever_their_syntax():
    assert (
        variables_named("--k=$(ELECTRA_QA_ADMIN_KEY)")
        == variables_named("--k=${ELECTRA_QA_ADMIN_KEY:?set it}")
        == variables_named("--k=${ELECTRA_QA_ADMIN_KEY}")
        == "--k=${ELECTRA_QA_ADMIN_KEY}"
    )
    assert variables_named("--k=$(A)") != variables_named("--k=${B}")


@pytest.mark.parametrize(("overlay", "service"), [("torch", "triton"), ("onnxruntime", "triton-cpu")])
def test_admin_protocols_need_the_key_from_a_secret_or_a_required_variable(rendered, overlay, service):
    from serving.keys import ADMIN_PROTOCOLS

    restricted = f"{','.join(ADMIN_PROTOCOLS)}:x-admin-key=${{ELECTRA_QA_ADMIN_KEY}}"
    triton = container(rendered[overlay])
    args = [variables_named(a) for a in triton["args"]]
    assert {f"--grpc-restricted-protocol={restricted}", f"--http-restricted-api={restricted}"} <= set(args)
    key = next(e for e in triton["env"] if e["name"] == "ELECTRA_QA_ADMIN_KEY")
    assert set(key["valueFrom"]["secretKeyRef"]) == {"name", "key"}
    # compose refuses to start without the variable (${NAME:?error}), in the command and the environment
    compose = COMPOSE["services"][service]
    assert all("${ELECTRA_QA_ADMIN_KEY:?" in a for a in compose_command(service) if "x-admin-key" in a)
    assert compose["environment"]["ELECTRA_QA_ADMIN_KEY"].startswith("${ELECTRA_QA_ADMIN_KEY:?")
    # probes read the health endpoints, which no key guards
    assert {triton[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe")} <= {
        "/v2/health/live",
        "/v2/models/electra_qa/ready",
    }
    assert "--admin-key" not in triton["livenessProbe"]["exec"]["command"]


@pytest.mark.parametrize(("overlay", "service"), [("torch", "triton"), ("onnxruntime", "triton-cpu")])
def test_deployment_runs_the_compose_image_of_its_service(rendered, overlay, service):
    """The GPU overlay runs the image compose's GPU service builds (the Dockerfile's gpu target), the CPU
    overlays the CPU service's (its cpu target)."""
    image = container(rendered[overlay])["image"]
    assert image == COMPOSE["services"][service]["image"]
    assert image == {"torch": "electra-qa-triton:24.10-gpu", "onnxruntime": "electra-qa-triton:24.10"}[overlay]
    assert COMPOSE["services"][service]["build"]["target"] == {"torch": "gpu", "onnxruntime": "cpu"}[overlay]
    assert re.search(r"ARG TRITON_TAG=24\.10", (ROOT / "docker" / "Dockerfile").read_text())


def test_the_gpu_overlay_requests_one_gpu_and_the_cpu_overlays_none(rendered):
    gpu, cpu = (container(rendered[o])["resources"] for o in ("torch", "onnxruntime"))
    assert gpu["limits"]["nvidia.com/gpu"] == 1 and gpu["requests"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu["limits"] and "nvidia.com/gpu" not in cpu["requests"]
    for resources in (gpu, cpu):  # Guaranteed QoS
        assert resources["requests"] == resources["limits"]
        assert {"cpu", "memory"} <= set(resources["limits"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_a_grace_period_longer_than_tritons_exit_timeout(rendered, overlay):
    pod = one(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
    triton = container(rendered[overlay])
    # liveness: /v2/health/live and tritonserver's memory (python -m serving.admin live, in the image)
    assert triton["livenessProbe"]["exec"]["command"][:4] == ["python3", "-m", "serving.admin", "live"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/models/electra_qa/ready"
    startup = triton["startupProbe"]
    compose_start = COMPOSE["services"]["triton"]["healthcheck"]["start_period"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 5 * 60, "as compose's start_period"
    assert compose_start in ("5m", 5 * 60 * 10**6)
    exit_timeout = int(next(a for a in triton["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    # preStop drains as make serve's supervisor does: settle, unload the ensemble, wait for it (bounded)
    pre_stop = triton["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:4] == ["python3", "-m", "serving.admin", "drain"]
    options = dict(zip(pre_stop[4::2], pre_stop[5::2]))
    assert set(options) == {"--settle-s", "--timeout-s", "--url"} and float(options["--settle-s"]) >= 5
    # the drain and liveness talk to Triton itself on loopback (the proxy passes no POST)
    http_port = next(a for a in triton["args"] if a.startswith("--http-port=")).split("=")[1]
    live = triton["livenessProbe"]["exec"]["command"]
    assert options["--url"] == live[live.index("--url") + 1] == f"http://127.0.0.1:{http_port}"
    options = {k: float(v) for k, v in options.items() if k != "--url"}
    assert pod["terminationGracePeriodSeconds"] > options["--settle-s"] + options["--timeout-s"] + exit_timeout
    assert "--model-control-mode=explicit" in triton["args"]  # the repository API can unload the ensemble


def test_liveness_memory_bound_is_per_overlay_and_below_the_pods_memory_limit(rendered):
    def bound_mb(overlay: str) -> float:
        command = container(rendered[overlay])["livenessProbe"]["exec"]["command"]
        return float(command[command.index("--max-memory-mb") + 1])

    def limit_mb(overlay: str) -> float:
        memory = container(rendered[overlay])["resources"]["limits"]["memory"]
        assert memory.endswith("Gi")
        return float(memory[:-2]) * 1024

    assert bound_mb("onnxruntime") == 2048  # make serve's --max-server-memory-mb default: the leak headroom
    # on a GPU tritonserver opens a CUDA context and pins host memory: room on top (not a restart loop)
    assert bound_mb("torch") >= bound_mb("onnxruntime") + 1024
    for overlay in OVERLAYS:  # drained by the probe's restart before the kernel's out-of-memory kill
        assert bound_mb(overlay) <= 0.6 * limit_mb(overlay)
    # compose's healthchecks bound tritonserver as the overlays of their engines do
    for service, overlay in (("triton", "torch"), ("triton-cpu", "onnxruntime")):
        test = COMPOSE["services"][service]["healthcheck"]["test"]
        assert float(test[test.index("--max-memory-mb") + 1]) == bound_mb(overlay), service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_restricted_as_the_image_allows(rendered, overlay):
    docs = rendered[overlay]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    security = container(docs)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert security == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert one(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # the model repository is only read; writable places: /dev/shm (1 GiB, as compose) and /tmp
    mounts = {m["mountPath"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    assert {"/dev/shm", "/tmp"} <= set(mounts) and not any(
        m.get("readOnly") for m in (mounts["/dev/shm"], mounts["/tmp"])
    )
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "1Gi"}


def test_object_storage_component_reads_the_repository_from_a_bucket_with_a_credential_file(rendered):
    docs = rendered["torch+object-storage"]
    triton = container(docs)
    env = {e["name"]: e.get("value") for e in triton["env"]}
    assert re.match(r"(s3|gs|as)://", env["MODEL_REPOSITORY"])
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    mounts = {m["mountPath"]: m for m in triton["volumeMounts"]}
    assert "/models" not in mounts
    credentials = Path(env["TRITON_CLOUD_CREDENTIAL_PATH"])
    assert mounts[str(credentials.parent)]["readOnly"] is True
    assert "/tmp" in mounts  # where Triton downloads the repository
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[str(credentials.parent)]["name"]]["secret"]["secretName"]


def test_http_inference_component_gives_the_proxy_the_keys_where_its_configuration_reads_them(rendered):
    """Off by default (no keys: every POST refused at the front); the component mounts the operator's Secret of
    keys, read-only, at the directory nginx.conf includes them from."""
    conf = (K8S / "base" / "nginx.conf").read_text()
    included = re.search(r"include (/\S+)/\*\.keys;", conf).group(1)
    assert all(included not in str(container(rendered[o], "proxy")) for o in OVERLAYS)
    docs = rendered["torch+http-inference"]
    mounts = {m["mountPath"]: m for m in container(docs, "proxy")["volumeMounts"]}
    assert mounts[included]["readOnly"] is True
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[included]["name"]]["secret"]["secretName"] == "electra-qa-inference-keys"


# --- services, disruption budget, scraping ---------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_headless_grpc_and_clusterip_http_and_metrics(rendered, overlay):
    docs = rendered[overlay]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in container(docs, "proxy")["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    # Triton itself listens on loopback only, behind the proxy
    triton = container(docs)
    assert "ports" not in triton
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(
        triton["args"]
    )
    grpc = one(docs, "Service", "electra-qa-grpc")["spec"]
    assert grpc["clusterIP"] == "None" and [p["port"] for p in grpc["ports"]] == [8001]
    http = one(docs, "Service", "electra-qa")["spec"]
    assert http["type"] == "ClusterIP" and {p["port"] for p in http["ports"]} == {8000, 8002}
    for spec in (grpc, http):
        assert spec["selector"].items() <= pod_labels.items()
    budget = one(docs, "PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items() and budget["maxUnavailable"] == 1
    policy = one(docs, "NetworkPolicy")["spec"]
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == {8000, 8001, 8002}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_the_metrics_port(rendered, overlay):
    annotations = one(rendered[overlay], "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8002",
        "prometheus.io/path": "/metrics",
    }


# --- autoscaling ----------------------------------------------------------------------------------------


def hpa_targets(docs: list[dict]) -> dict[str, float]:
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "electra-qa"}
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert {m["type"] for m in hpa["metrics"]} == {"Pods"}, "scale on Triton's load metrics, not on CPU"
    return {m["pods"]["metric"]["name"]: quantity(m["pods"]["target"]["averageValue"]) for m in hpa["metrics"]}


def quantity(value: str) -> float:
    return float(value[:-1]) / 1000 if str(value).endswith("m") else float(value)


def test_hpa_metrics_are_the_ones_prometheus_adapter_serves(rendered):
    served = {rule["name"]["as"] for rule in adapter_rules()}
    for overlay in OVERLAYS:
        assert set(hpa_targets(rendered[overlay])) == {QUEUE_METRIC, LOAD_METRIC} <= served
    for rule in adapter_rules():
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    assert re.fullmatch(r"v\d+\.\d+\.\d+", values["image"]["tag"])
    assert re.search(r"--version \d+\.\d+\.\d+", ADAPTER_VALUES.read_text()), "pin the chart version"


def test_hpa_targets_follow_from_the_benchmarks(rendered):
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    gpu_section = benchmarks[benchmarks.index("\n## GPU") :]  # the GPU targets (other sections name CPU ones)
    p99_goal_ms = float(re.search(r"p99 ≤ (\d+) ms", gpu_section).group(1))
    per_gpu = float(re.search(r"≥ ([\d,]+) q/s", gpu_section).group(1).replace(",", ""))
    per_cpu_pod = float(re.search(r"fp32 ≈ ([\d.]+) q/s", benchmarks).group(1))
    per_bf16_pod = float(re.search(r"bf16 ≈ ([\d.]+) q/s", benchmarks).group(1))
    gpu, cpu, bf16 = (hpa_targets(rendered[o]) for o in OVERLAYS)
    # a mean queue wait whose p99 (≈ 4.6 × the mean for queueing's exponential tail) fits half the p99 goal
    assert 4.6 * gpu[QUEUE_METRIC] / 1000 <= p99_goal_ms / 2
    # 70 % of a pod's capacity in windows/s (one SQuAD-sized question is one window)
    assert gpu[LOAD_METRIC] == pytest.approx(0.7 * per_gpu, rel=0.02)
    assert cpu[LOAD_METRIC] == pytest.approx(0.7 * per_cpu_pod, rel=0.02)
    assert bf16[LOAD_METRIC] == pytest.approx(0.7 * per_bf16_pod, rel=0.02)
    assert cpu[QUEUE_METRIC] > gpu[QUEUE_METRIC]


# --- compose monitoring profile, Prometheus, Grafana ----------------------------------------------------


def test_compose_monitoring_profile_adds_prometheus_and_grafana_with_pinned_images():
    services = COMPOSE["services"]
    for name, repository in (("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")):
        service = services[name]
        assert service["profiles"] == ["monitoring"]
        image, tag = service["image"].rsplit(":", 1)
        assert image == repository and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"pin {name} to an exact release"
        assert all(str(p).startswith("127.0.0.1:") for p in service["ports"]), f"{name}: localhost only"
        for volume in service["volumes"]:
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
                assert str(volume).endswith(":ro")


def test_prometheus_scrapes_both_triton_services_metrics_port():
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert targets == {"proxy:8002", "proxy-cpu:8002"}  # each Triton service's front, in its network namespace
    for service in ("proxy", "proxy-cpu"):
        assert "8002:8002" in {str(p) for p in COMPOSE["services"][service]["ports"]}


def test_grafana_provisions_the_prometheus_datasource_and_the_checked_in_dashboard():
    grafana = COMPOSE["services"]["grafana"]
    mounts = dict(str(v).rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if str(v).startswith("./"))
    provisioning = ROOT / next(s for s, t in mounts.items() if t == "/etc/grafana/provisioning")
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "electra-qa.yaml").read_text())["providers"][0]
    dashboards = ROOT / next(s for s, t in mounts.items() if t == provider["options"]["path"])
    assert (dashboards / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# --- the dashboard -----------------------------------------------------------------------------------------


def test_dashboard_loads_and_every_query_reads_the_selected_prometheus():
    board = dashboard()
    assert board["uid"] and board["title"] and board["panels"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].count("(") == target["expr"].count(
                ")"
            )


def test_dashboard_shows_what_the_issue_asks_for():
    queries = dashboard_queries()
    joined = "\n".join(queries)
    names = set().union(*(metric_names(q) for q in queries))
    assert {
        "nv_inference_request_success",
        "nv_inference_request_summary_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "electra_qa_model_tokens_total",
    } <= names
    assert GPU_ONLY_METRICS - {"nv_gpu_memory_total_bytes"} <= names
    assert 'quantile="0.5"' in joined and 'quantile="0.99"' in joined
    assert 'model=~"tokenizer|encoder|decoder"' in joined  # per-step time


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (instance) (rate(nv_inference_queue_duration_us{instance=~"$instance"}[$__rate_interval]))'
            f' / clamp_min(sum by (instance) (rate(nv_inference_request_success{{model="{ENSEMBLE}"}}[5m])), 1e-3)'
            " / 1000",
            {"nv_inference_queue_duration_us", "nv_inference_request_success"},
        ),
        (
            '1 - sum(rate(electra_qa_model_tokens_total{kind="real"}[1m]))'
            " / sum(rate(electra_qa_model_tokens_total[1m]))",
            {"electra_qa_model_tokens_total"},
        ),
        ("sum by (<<.GroupBy>>) (rate(nv_inference_count{<<.LabelMatchers>>}[2m]))", {"nv_inference_count"}),
        ("max(nv_gpu_utilization) * 100 > bool 0.5 or on (instance) up offset 5m", {"nv_gpu_utilization", "up"}),
    ],
)
def test_metric_names_are_read_from_promql(expr, names):
    assert metric_names(expr) == names
