"""Triton's HTTP API as operators' tools use it: readiness, statistics, model configuration and the model
repository, with the admin key that ``make serve`` puts on those protocols (``serving.serve``)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
ADMIN_HEADER = "x-admin-key"


def admin_key_file(cache: Path, grpc_port: int) -> Path:
    """Where ``make serve`` leaves the random admin key of the server on ``grpc_port`` (this user only)."""
    return cache / f"admin-key-{grpc_port}"


def parse_header(value: str) -> tuple[str, str] | None:
    """``HEADER=VALUE`` as a pair; None when malformed."""
    header, _, secret = value.strip().partition("=")
    return (header, secret) if header and secret else None


def local_admin_key(grpc_url: str, cache: Path = PROJECT / ".triton") -> tuple[str, str] | None:
    """The admin key a local ``make serve`` wrote for the server at ``grpc_url`` (host:port), if any."""
    try:
        return parse_header(admin_key_file(cache, int(grpc_url.rsplit(":", 1)[1])).read_text())
    except (OSError, ValueError, IndexError):
        return None


def grpc_headers(key: tuple[str, str] | None) -> dict[str, str]:
    """The key as gRPC metadata: Triton's restricted protocols read ``triton-grpc-protocol-<header>``."""
    return {f"triton-grpc-protocol-{key[0]}": key[1]} if key else {}


class AdminClient:
    """Triton's HTTP endpoints with the admin key (HTTP sends the header as it is named)."""

    def __init__(self, http_url: str, key: tuple[str, str] | None = None, timeout_s: float = 5.0):
        self.http_url, self.timeout_s = http_url.rstrip("/"), timeout_s
        self.headers = dict([key]) if key else {}

    def call(self, path: str, body: dict | None = None):
        request = urllib.request.Request(f"{self.http_url}{path}", headers=self.headers,
                                         data=None if body is None else json.dumps(body).encode(),
                                         method="GET" if body is None else "POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read() or b"null")

    def ready(self) -> bool:
        """``/v2/health/ready`` (open to everyone): the server and, with strict readiness, its models."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def statistics(self, model: str) -> dict:
        return self.call(f"/v2/models/{model}/stats")["model_stats"][0]

    def config(self, model: str) -> dict:
        return self.call(f"/v2/models/{model}/config")

    def unload(self, model: str) -> None:
        self.call(f"/v2/repository/models/{model}/unload", {})

    def model_states(self) -> dict[str, str]:
        return {m["name"]: m.get("state", "") for m in self.call("/v2/repository/index", {})}
