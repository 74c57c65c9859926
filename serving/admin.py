"""Triton's HTTP API as operators' tools use it: readiness, statistics, model configuration and the model
repository, with the admin key that ``make serve`` puts on those protocols (``serving.keys``); and the
inference key (``serve --api-key``) as the tools that ask the server take it (``add_api_key_option``).

    python -m serving.admin drain [--url http://127.0.0.1:8000] [--settle-s 5] [--timeout-s 30]
    python -m serving.admin live [--url http://127.0.0.1:8000] [--max-memory-mb 2048]

drains a server before it is stopped, as ``make serve``'s supervisor does (the Kubernetes preStop hook runs it,
and ``docker compose exec`` can): waits ``--settle-s`` for load balancers to drop the server, unloads the
ensemble (new requests are refused with UNAVAILABLE, those in flight finish through the composing models),
and waits until it is unloaded, at most ``--timeout-s``. The key: ``--admin-key HEADER=VALUE``, else the value
of $ELECTRA_QA_ADMIN_KEY (header x-admin-key).

``live`` is the containers' liveness check: tritonserver answers ``/v2/health/live`` (open, no key), its
private memory is at most ``--max-memory-mb`` — what ``make serve``'s supervisor restarts it for: Triton 2.51
keeps calls whose clients went away with their responses unread, for good (docs/architecture.md, "Limits and
failures") — and the ensemble answers a one-pair question within ``--answer-timeout-s``, as callers would be
answered (``answering``): health alone stays green with a step's process dead or stuck.

Needs only the standard library: it runs in Triton's image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from client.names import ENSEMBLE
from serving.processes import memory_mb, tritonserver_pids

PROJECT = Path(__file__).resolve().parent.parent
ADMIN_HEADER = "x-admin-key"
ADMIN_KEY_ENV = "ELECTRA_QA_ADMIN_KEY"  # the containers' admin key (docker-compose.yml, deploy/k8s)
API_KEY_ENV = "ELECTRA_QA_API_KEY"  # the inference key (serve --api-key) of the tools that ask the server


def admin_key_file(cache: Path, grpc_port: int) -> Path:
    """Where ``make serve`` leaves the random admin key of the server on ``grpc_port`` (this user only)."""
    return cache / f"admin-key-{grpc_port}"


def parse_header(value: str) -> tuple[str, str] | None:
    """``HEADER=VALUE`` as a pair; None when malformed."""
    header, _, secret = value.strip().partition("=")
    return (header, secret) if header and secret else None


def add_api_key_option(parser: argparse.ArgumentParser) -> None:
    """``--api-key HEADER=VALUE``, the inference key of a server started with ``--api-key``, defaulting to
    $ELECTRA_QA_API_KEY (same form), for the tools that ask the server (``offline.bulk``, ``offline.squad``,
    ``perf.load_test``): ``args.api_key`` is a (header, value) pair, as ``TritonQA(api_key=...)`` takes it, or
    None. A malformed key is a usage error (exit status 2) whose message does not repeat it."""
    parser.add_argument(
        "--api-key",
        metavar="HEADER=VALUE",
        type=api_key,
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"the inference key of a server started with --api-key HEADER=VALUE (default: ${API_KEY_ENV})",
    )


def api_key(value: str) -> tuple[str, str]:
    """``HEADER=VALUE`` as (header, value), as ``serving.serve --api-key`` reads it."""
    pair = parse_header(value)
    if pair is None:
        raise argparse.ArgumentTypeError(f"takes HEADER=VALUE, as the server's --api-key (so does ${API_KEY_ENV})")
    return pair


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
        request = urllib.request.Request(
            f"{self.http_url}{path}",
            headers=self.headers,
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read() or b"null")

    def ready(self) -> bool:
        """``/v2/health/ready`` (open to everyone): the server and, with strict readiness, its models."""
        return self._healthy("ready")

    def live(self) -> bool:
        """``/v2/health/live`` (open to everyone)."""
        return self._healthy("live")

    def _healthy(self, probe: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/{probe}", timeout=2) as response:
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


PROBE_PAIR = ("Who wrote it?", "Ada Lovelace wrote it in 1843.")


def answering(http_url: str, timeout_s: float = 4.0, key: tuple[str, str] | None = None) -> str | None:
    """Why the ensemble does not answer a one-pair question over ``http_url`` (Triton's own HTTP port, on
    loopback) within ``timeout_s`` — no answer in time (a stuck step or server), a Python-backend process that
    is not healthy (dead, killed for memory), no connection — or None when it does. A refusal that only a
    serving server gives is an answer too: overload (UNAVAILABLE, the request's queue timeout passed), or the
    ensemble unloaded by a drain. ``key``: the inference key of a server that restricts inference."""
    question, context = PROBE_PAIR
    body = {
        "inputs": [
            {"name": "question", "shape": [1], "datatype": "BYTES", "data": [question]},
            {"name": "context", "shape": [1], "datatype": "BYTES", "data": [context]},
        ],
        # refused from Triton's queues before the probe gives up, rather than left waiting
        "parameters": {"timeout": int(timeout_s * 1e6 * 0.75)},
    }
    request = urllib.request.Request(
        f"{http_url.rstrip('/')}/v2/models/{ENSEMBLE}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(dict([key]) if key else {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            outputs = {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
            return None if "answer" in outputs else "the answer has no 'answer' output"
    except urllib.error.HTTPError as error:
        message = (json.loads(error.read() or b"{}") or {}).get("error", "")
        if error.code in (400, 404, 503) and "not healthy" not in message:  # refused by a serving server
            return None
        return f"HTTP {error.code}: {message[:300]}"
    except (OSError, ValueError) as error:  # no answer in time, no connection, not JSON
        return f"no answer within {timeout_s:g} s ({error.__class__.__name__}: {error})"


def drain(admin: AdminClient, model: str = ENSEMBLE, timeout_s: float = 30.0, poll_s: float = 0.1) -> str:
    """Unload ``model`` and wait until it is no longer UNLOADING (its requests in flight have finished), at
    most ``timeout_s``; its state then."""
    deadline = time.monotonic() + timeout_s
    admin.unload(model)
    state = "UNLOADING"
    while time.monotonic() < deadline:
        state = admin.model_states().get(model, "")
        if state != "UNLOADING":
            break
        time.sleep(poll_s)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("drain", help="unload the ensemble and wait for its requests in flight")
    command.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP endpoint")
    command.add_argument("--admin-key", metavar="HEADER=VALUE", help=f"default: x-admin-key=${ADMIN_KEY_ENV}")
    command.add_argument("--settle-s", type=float, default=5.0, help="wait first, for endpoints to drop the server")
    command.add_argument("--timeout-s", type=float, default=30.0, help="longest wait for requests in flight")
    live = commands.add_parser(
        "live", help="liveness: health, tritonserver's memory under the limit, a question answered"
    )
    live.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP endpoint")
    live.add_argument("--max-memory-mb", type=float, default=2048, help="tritonserver's private memory limit")
    live.add_argument("--answer-timeout-s", type=float, default=4.0, help="longest wait for the question's answer")
    add_api_key_option(live)
    args = parser.parse_args(argv)
    if args.command == "live":
        if not AdminClient(args.url).live():
            print("live: /v2/health/live does not answer", file=sys.stderr)
            return 1
        for pid in tritonserver_pids():
            if (memory := memory_mb(pid)) > args.max_memory_mb:
                print(
                    f"live: tritonserver {pid} holds {memory:.0f} MB of private memory "
                    f"(limit {args.max_memory_mb:.0f} MB)",
                    file=sys.stderr,
                )
                return 1
        if why := answering(args.url, args.answer_timeout_s, args.api_key):
            print(f"live: {ENSEMBLE} does not answer: {why}", file=sys.stderr)
            return 1
        return 0
    key = (
        parse_header(args.admin_key)
        if args.admin_key
        else ((ADMIN_HEADER, os.environ[ADMIN_KEY_ENV]) if os.environ.get(ADMIN_KEY_ENV) else None)
    )
    if key is None:
        print(f"drain: no admin key (--admin-key HEADER=VALUE or ${ADMIN_KEY_ENV})", file=sys.stderr)
        return 2
    time.sleep(args.settle_s)
    started = time.monotonic()
    print(f"drain: unloading {ENSEMBLE} at {datetime.now(timezone.utc).isoformat(timespec='milliseconds')}", flush=True)
    try:
        state = drain(AdminClient(args.url, key, timeout_s=5.0), timeout_s=args.timeout_s)
    except (OSError, ValueError) as error:  # the server is not serving (yet, any more): nothing to drain
        print(f"drain: {error}", file=sys.stderr)
        return 1
    print(f"drain: {ENSEMBLE} {state or 'unloaded'} after {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
