"""gRPC over TLS and a key on the inference protocol (Triton's restricted protocol), with certificates made in
the test setup: the right client answers; no TLS, no key or a wrong key is refused — and never retried."""

import json
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import ENSEMBLE, TLS, AuthenticationError, RetryPolicy, ServerUnavailableError, TritonQA
from serving.processes import mapped_shm, processes, stub_pids, tritonserver_pids
from testkit.cases import CASES
from tests.integration.certs import make_certificates
from tests.integration.conftest import launch, stop

KEY = "s3cret-test-key"


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory, tiny_checkpoint, triton_server):
    workdir = tmp_path_factory.mktemp("secure")
    certs = make_certificates(workdir / "certs")
    server = launch(
        workdir,
        tiny_checkpoint,
        triton_server.repository,
        f"--tls-cert {certs['server']} --tls-key {certs['server_key']} --api-key x-api-key={KEY} --address 127.0.0.1",
    )
    yield server, TLS(root_certificates=str(certs["ca"]))
    stop(server.process)


def test_tls_client_with_the_key_gets_answers(secure_server):
    server, tls = secure_server
    with TritonQA(server.grpc_url, tls=tls, api_key=KEY) as qa:
        assert qa.ask(*CASES["card"]).text
        assert qa.is_ready()


@pytest.mark.parametrize("api_key", [None, "wrong-key"])
def test_inference_without_the_right_key_is_refused_and_not_retried(secure_server, api_key):
    server, tls = secure_server
    with TritonQA(
        server.grpc_url, tls=tls, api_key=api_key, retry=RetryPolicy(attempts=5, backoff_s=1.0, max_backoff_s=1.0)
    ) as qa:
        with pytest.raises(AuthenticationError, match="restricted"):  # not retried: tests/unit/test_client.py
            qa.ask(*CASES["card"])


def test_plaintext_client_cannot_talk_to_the_tls_server(secure_server):
    server, _ = secure_server
    with TritonQA(server.grpc_url, api_key=KEY, timeout_s=5, retry=RetryPolicy(attempts=2)) as qa:
        with pytest.raises(ServerUnavailableError):
            qa.ask(*CASES["card"])


def test_client_that_does_not_trust_the_server_certificate_is_refused(secure_server, tmp_path):
    server, _ = secure_server
    other_ca = make_certificates(tmp_path / "other")["ca"]
    with TritonQA(server.grpc_url, tls=TLS(root_certificates=str(other_ca)), api_key=KEY, timeout_s=5) as qa:
        with pytest.raises(ServerUnavailableError):
            qa.ask(*CASES["card"])


ADMIN_CALLS = [  # (HTTP method, path, body) of Triton's admin APIs, one or more per protocol
    (
        "POST",
        "/v2/systemsharedmemory/region/x/register",
        {"key": "/triton_python_backend_shm_region_x", "offset": 0, "byte_size": 64},
    ),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", "/v2/logging", {"log_verbose_level": 1, "log_error": False}),
    ("GET", "/v2/trace/setting", None),
    ("POST", "/v2/repository/index", {}),
    ("POST", "/v2/repository/models/electra_qa/unload", {}),
    ("GET", "/v2/models/electra_qa/config", None),
    ("GET", "/v2/models/stats", None),
]


def http_status(url: str, method: str, body, headers=None) -> int:
    request = urllib.request.Request(
        url, method=method, headers=headers or {}, data=None if body is None else json.dumps(body).encode()
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=[c[1] for c in ADMIN_CALLS])
def test_admin_apis_are_closed_over_http_without_the_admin_key(triton_server, method, path, body):
    assert http_status(f"{triton_server.http_url}{path}", method, body) == 403
    assert http_status(f"{triton_server.http_url}{path}", method, body, {"x-admin-key": "guess"}) == 403


def test_admin_protocols_are_closed_over_grpc_without_the_admin_key(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    calls = [
        lambda h: client.get_system_shared_memory_status(headers=h),
        lambda h: client.register_system_shared_memory("x", "/triton_python_backend_shm_region_x", 64, headers=h),
        lambda h: client.update_log_settings({"log_verbose_level": 1}, headers=h),
        lambda h: client.get_trace_settings(headers=h),
        lambda h: client.get_model_repository_index(headers=h),
        lambda h: client.unload_model(ENSEMBLE, headers=h),
        lambda h: client.get_model_config(ENSEMBLE, headers=h),
        lambda h: client.get_inference_statistics(headers=h),
    ]
    for call in calls:
        with pytest.raises(InferenceServerException, match="restricted"):
            call({})
    admin = {f"triton-grpc-protocol-{triton_server.admin_key[0]}": triton_server.admin_key[1]}
    assert client.get_model_config(ENSEMBLE, headers=admin).config.name == ENSEMBLE
    assert client.get_inference_statistics(headers=admin).model_stats


def test_health_metadata_and_inference_stay_open_and_the_admin_key_opens_the_rest(triton_server, qa):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/electra_qa", "/v2/models/electra_qa/ready"):
        assert http_status(f"{triton_server.http_url}{path}", "GET", None) == 200
    assert qa.ask(*CASES["card"]).text
    assert triton_server.admin.statistics(ENSEMBLE)["name"] == ENSEMBLE
    assert ENSEMBLE in triton_server.admin.model_states()


def test_the_api_key_also_guards_http_inference(secure_server):
    server, _ = secure_server
    body = {
        "inputs": [
            {"name": "question", "shape": [1], "datatype": "BYTES", "data": ["Who?"]},
            {"name": "context", "shape": [1], "datatype": "BYTES", "data": ["Ada wrote it."]},
        ]
    }
    url = f"{server.http_url}/v2/models/electra_qa/infer"
    assert http_status(url, "POST", body) == 403
    assert http_status(url, "POST", body, {"x-api-key": "wrong"}) == 403
    assert http_status(url, "POST", body, {"x-api-key": KEY}) == 200


def tritonserver_of(server):
    """The tritonserver process serving ``server`` (its argv included)."""
    pids = tritonserver_pids(int(server.grpc_url.rsplit(":", 1)[1]))
    return next(p for p in processes() if p.pid in pids)


def test_the_printed_commands_show_no_key(secure_server):
    """make serve's log: serve's own command line and tritonserver's, the keys' values shown as <redacted>
    (tritonserver takes them as flags: /proc/<pid>/cmdline still shows them to this machine's users)."""
    server, _ = secure_server
    log = server.log.read_text()
    assert KEY not in log and server.admin_key[1] not in log
    assert "--api-key x-api-key=<redacted>" in log
    assert "--grpc-restricted-protocol=inference:x-api-key=<redacted>" in log
    assert "--http-restricted-api=shared-memory,model-repository,model-config,statistics,trace,logging:" in log


def test_the_shared_memory_of_the_python_backend_is_owner_only(triton_server, qa):
    """The regions each stub passes its tensors through (/dev/shm, 0644 as the backend creates them): 0600
    once make serve's supervisor has seen them, also after requests have grown them."""
    assert qa.ask(*CASES["card"]).text
    stubs = stub_pids(tritonserver_of(triton_server).pid)
    regions = mapped_shm(stubs)
    assert len(regions) >= len(stubs) >= 3
    modes = {region: oct(stat.S_IMODE(Path(region).stat().st_mode)) for region in regions}
    assert set(modes.values()) == {"0o600"}, modes


def test_make_serve_listens_on_loopback_unless_told_otherwise(triton_server):
    """The session's server, started without --address: gRPC and HTTP bound to 127.0.0.1."""
    argv = tritonserver_of(triton_server).argv
    assert b"--grpc-address=127.0.0.1" in argv and b"--http-address=127.0.0.1" in argv
