"""gRPC over TLS and a key on the inference protocol (Triton's restricted protocol), with certificates made in
the test setup: the right client answers; no TLS, no key or a wrong key is refused — and never retried."""

import time

import pytest

from client import TLS, AuthenticationError, RetryPolicy, ServerUnavailableError, TritonQA
from tests.cases import CASES
from tests.integration.certs import make_certificates
from tests.integration.conftest import launch, stop

KEY = "s3cret-test-key"


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory, tiny_checkpoint, triton_server):
    workdir = tmp_path_factory.mktemp("secure")
    certs = make_certificates(workdir / "certs")
    server = launch(workdir, tiny_checkpoint, triton_server.repository,
                    f"--tls-cert {certs['server']} --tls-key {certs['server_key']} "
                    f"--api-key x-api-key={KEY} --address 127.0.0.1")
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
    with TritonQA(server.grpc_url, tls=tls, api_key=api_key,
                  retry=RetryPolicy(attempts=5, backoff_s=1.0, max_backoff_s=1.0)) as qa:
        started = time.monotonic()
        with pytest.raises(AuthenticationError, match="restricted"):
            qa.ask(*CASES["card"])
        assert time.monotonic() - started < 0.9  # no backoff happened


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
