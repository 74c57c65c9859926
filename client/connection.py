"""How the clients talk to the server: gRPC channel settings, TLS, headers, and bounded retries.

Shared by ``TritonQA`` and ``AsyncTritonQA``; no I/O here.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from client.errors import DeadlineExceededError, QAError, ServerUnavailableError


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    Only ``ServerUnavailableError`` is retried — the server is down, restarting, or shedding load (Triton
    answers UNAVAILABLE for those) — never invalid input, authentication failures or deadlines. All attempts
    together stay within the call's ``timeout_s``.

    The default retries for about 14 s (the expected sum of its waits; at most 1 s each, so an answer follows
    within a second of the server's return): long enough to ride through a restart of ``make serve``'s
    tritonserver (a few seconds), within the default ``timeout_s`` (30 s).
    """

    attempts: int = 30
    backoff_s: float = 0.1
    max_backoff_s: float = 1.0

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (from 0): full jitter up to the capped exponential back-off."""
        return random.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2**retry))


NO_RETRIES = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class ChannelSettings:
    """gRPC channel arguments, all set explicitly: tritonclient replaces its own defaults (max message sizes
    included) with whatever channel arguments it is given.

    ``lb_policy`` is gRPC's load-balancing policy over the addresses the target resolves to: ``round_robin``
    (the default) spreads calls over every replica and skips those whose connection is down; with one
    address it behaves as ``pick_first``, gRPC's own default, which sends everything to the first address
    that connects.

    ``initial_reconnect_backoff_s`` / ``max_reconnect_backoff_s`` bound how long a connection that went down
    waits before its next attempt; until then gRPC fails calls at once (gRPC's own maximum, 120 s, would keep a
    client failing long after a restarted server is back)."""

    max_send_bytes: int = 2**31 - 1
    # an answer is at most 256 questions x 20 answers of a context's span: far under this. A larger reply is
    # refused by gRPC as it arrives (the call fails with ServerError), not held
    max_receive_bytes: int = 64 * 2**20
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    keepalive_without_calls: bool = True
    lb_policy: str = "round_robin"
    initial_reconnect_backoff_s: float = 0.1
    max_reconnect_backoff_s: float = 1.0

    def channel_args(self) -> list[tuple[str, int | str]]:
        """These settings as gRPC channel arguments."""
        return [
            ("grpc.lb_policy_name", self.lb_policy),
            ("grpc.max_send_message_length", self.max_send_bytes),
            ("grpc.max_receive_message_length", self.max_receive_bytes),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_without_calls)),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", int(self.initial_reconnect_backoff_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(self.max_reconnect_backoff_s * 1000)),
        ]


def channel_target(url: str | Sequence[str]) -> str:
    """The gRPC target for ``url``: a string is passed through as it is (``host:port``, or any gRPC target
    such as ``dns:///qa.svc:8001`` or ``ipv4:10.0.0.1:8001,10.0.0.2:8001``); a sequence of ``host:port``
    addresses becomes one ``ipv4:`` (or ``ipv6:``) target over all of them. gRPC's address-list targets take
    IP addresses only, so host names in a list are resolved here, once, to their IPv4 addresses (IPv6 where a
    name has none); a name whose addresses change (a Kubernetes headless Service) belongs in a ``dns:///``
    target instead, which gRPC resolves again as connections come and go."""
    if isinstance(url, str):
        return url
    addresses = list(url)
    if not addresses or not all(isinstance(a, str) for a in addresses):
        raise ValueError(f"url must be a gRPC target or a non-empty list of 'host:port' strings, got {url!r}")
    if len(addresses) == 1:
        return addresses[0]
    resolved: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    ports: list[int] = []
    for address in addresses:
        host, port = _split_host_port(address)
        for ip in _resolve(host, port):
            resolved.append(ip)
            ports.append(port)
    versions = {ip.version for ip in resolved}
    if len(versions) > 1:
        raise ValueError(
            f"{addresses} mix IPv4 and IPv6 addresses; gRPC balances over one family per target: "
            "pass one family, or a dns:/// target"
        )
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in zip(resolved, ports))
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in zip(resolved, ports))


def _split_host_port(address: str) -> tuple[str, int]:
    if "/" in address or address.count(":") > 1 and not address.startswith("["):
        raise ValueError(
            f"{address!r}: a list takes 'host:port' addresses ('[v6 address]:port' for IPv6), "
            "not gRPC targets; pass a target such as dns:///host:port as a string"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} has no port: write it as 'host:port'")
    return host.strip("[]"), int(port)


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve {host!r}: {error}") from None
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )
    v4: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip for ip in ips if ip.version == 4]
    return v4 or ips


@dataclass(frozen=True)
class TLS:
    """gRPC over TLS: PEM file paths (``root_certificates`` to trust the server; key and chain for mutual TLS)."""

    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None

    def client_kwargs(self) -> dict:
        """These settings as tritonclient's ``InferenceServerClient`` TLS keyword arguments."""
        return {
            "ssl": True,
            "root_certificates": self.root_certificates,
            "private_key": self.private_key,
            "certificate_chain": self.certificate_chain,
        }


class RetryPlan:
    """One call's attempts: how much time is left for the next one, and whether and when to retry."""

    def __init__(self, policy: RetryPolicy, timeout_s: float | None):
        self.policy = policy
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.attempt = 0

    def remaining_s(self) -> float | None:
        """Time left for the next attempt; raises DeadlineExceededError when none is."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceededError("deadline exceeded before the server answered")
        return left

    def next_delay_s(self, error: QAError) -> float | None:
        """Seconds to wait before retrying after ``error``, or None when it must not be retried: it is not
        UNAVAILABLE, the attempts are spent, or the wait would end past the deadline."""
        self.attempt += 1
        if not isinstance(error, ServerUnavailableError) or self.attempt >= self.policy.attempts:
            return None
        delay = self.policy.delay_s(self.attempt - 1)
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            return None
        return delay
