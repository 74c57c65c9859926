"""How the clients talk to the server: gRPC channel settings, TLS, headers, and bounded retries.

Shared by ``TritonQA`` and ``AsyncTritonQA``; no I/O here.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from client.errors import DeadlineExceededError, QAError, ServerUnavailableError


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    Only ``ServerUnavailableError`` is retried — the server is down, restarting, or shedding load (Triton
    answers UNAVAILABLE for those) — never invalid input, authentication failures or deadlines. All attempts
    together stay within the call's ``timeout_s``.
    """

    attempts: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def delay_s(self, retry: int) -> float:
        return random.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2**retry))


NO_RETRIES = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class ChannelSettings:
    """gRPC channel arguments, all set explicitly: tritonclient replaces its own defaults (max message sizes
    included) with whatever channel arguments it is given."""

    max_message_bytes: int = 2**31 - 1
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    keepalive_without_calls: bool = True

    def channel_args(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_without_calls)),
            ("grpc.http2.max_pings_without_data", 0),
        ]


@dataclass(frozen=True)
class TLS:
    """gRPC over TLS: PEM file paths (``root_certificates`` to trust the server; key and chain for mutual TLS)."""

    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None

    def client_kwargs(self) -> dict:
        return {"ssl": True, "root_certificates": self.root_certificates, "private_key": self.private_key,
                "certificate_chain": self.certificate_chain}


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
