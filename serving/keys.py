"""The keys on Triton's protocols, and command lines shown without them.

Triton's administrative protocols (shared memory, model repository and configuration, statistics, trace,
logging) need a key on both gRPC and HTTP: ``--admin-key HEADER=VALUE``, or a random one written to
``<cache>/admin-key-<grpc port>`` (readable by this user only) for local tools such as ``make perf``. gRPC and
HTTP listen on 127.0.0.1 unless ``--address`` says otherwise; the printed command lines show keys as <redacted>
(tritonserver's own /proc/<pid>/cmdline still holds them).
"""

from __future__ import annotations

import argparse
import os
import secrets

from serving.admin import ADMIN_HEADER, admin_key_file, parse_header

# Triton's protocols (gRPC) / APIs (HTTP) that only operators use: closed to clients without the admin key
ADMIN_PROTOCOLS = ("shared-memory", "model-repository", "model-config", "statistics", "trace", "logging")
# the flags that carry a key (tritonserver's protocols:header=value, serve's header=value), and what printed
# command lines show of it
KEY_FLAGS = ("--grpc-restricted-protocol", "--http-restricted-api", "--api-key", "--admin-key")
REDACTED = "<redacted>"


def header_pair(value: str, option: str) -> tuple[str, str]:
    pair = parse_header(value)
    if pair is None:
        raise SystemExit(f"{option} takes HEADER=VALUE")
    return pair


def admin_key(args: argparse.Namespace) -> tuple[str, str]:
    """The admin key (header, value): the one given, or a new random one written where local tools find it."""
    if args.admin_key:
        return header_pair(args.admin_key, "--admin-key")
    path = admin_key_file(args.cache, args.grpc_port)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{ADMIN_HEADER}={value}\n")
    return ADMIN_HEADER, value


def security_args(args: argparse.Namespace, admin: tuple[str, str]) -> list[str]:
    """tritonserver flags for the address, gRPC TLS, the admin key (both protocols) and the inference key
    (both protocols)."""
    extra = [f"--grpc-address={args.address}", f"--http-address={args.address}"]
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    if args.tls_cert:
        extra += [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={args.tls_cert.resolve()}",
            f"--grpc-server-key={args.tls_key.resolve()}",
        ]
        if args.tls_client_ca:
            extra += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={args.tls_client_ca.resolve()}"]
    restricted = [(",".join(ADMIN_PROTOCOLS), admin)]
    if args.api_key:
        restricted.append(("inference", header_pair(args.api_key, "--api-key")))
    for protocols, (header, value) in restricted:
        extra += [
            f"--grpc-restricted-protocol={protocols}:{header}={value}",
            f"--http-restricted-api={protocols}:{header}={value}",
        ]
    return extra


def redacted(command: list[str]) -> list[str]:
    """``command`` as it may be shown: the keys' values in its KEY_FLAGS replaced by REDACTED
    (``--flag=[protocols:]header=value`` and ``--flag [protocols:]header=value``)."""
    shown = []
    for i, arg in enumerate(command):
        flag, sep, spec = arg.partition("=")
        if sep and flag in KEY_FLAGS:
            arg = f"{flag}={_redacted_spec(spec)}"
        elif i and command[i - 1] in KEY_FLAGS:
            arg = _redacted_spec(arg)
        shown.append(arg)
    return shown


def _redacted_spec(spec: str) -> str:
    return f"{spec.partition('=')[0]}={REDACTED}"  # neither protocols nor headers contain "="
