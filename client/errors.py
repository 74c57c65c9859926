"""The client's exceptions. gRPC errors become these in one place: ``translate``."""

from __future__ import annotations

import re


class QAError(Exception):
    """Any failure of a question-answering call."""


class InvalidInputError(QAError, ValueError):
    """The server refused the request (gRPC INVALID_ARGUMENT, OUT_OF_RANGE, or RESOURCE_EXHAUSTED: a message over
    the size gRPC accepts): fix the input; retrying will not help. From the many-questions calls, ``example`` is
    the refused example's position in the input and ``reason`` the server's message without it."""

    example: int  # set on the errors of the many-questions calls only
    reason: str


class ServerUnavailableError(QAError, ConnectionError):
    """The server cannot be reached or is not serving (gRPC UNAVAILABLE, or ABORTED: a call to try again)."""


class AuthenticationError(QAError, PermissionError):
    """The server refused the credentials (gRPC UNAUTHENTICATED / PERMISSION_DENIED, or Triton's restricted
    protocol without the right header); never retried."""


class DeadlineExceededError(QAError, TimeoutError):
    """No answer within ``timeout_s`` (gRPC DEADLINE_EXCEEDED)."""


class ServerError(QAError):
    """The server failed in some other way (for instance INTERNAL, NOT_FOUND for a model it does not serve)."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


# every gRPC status code but OK (tests/unit/test_client.py holds it to grpc.StatusCode)
_BY_STATUS: dict[str, type[QAError]] = {
    "ABORTED": ServerUnavailableError,
    "ALREADY_EXISTS": ServerError,
    "CANCELLED": ServerError,
    "DATA_LOSS": ServerError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "FAILED_PRECONDITION": ServerError,
    "INTERNAL": ServerError,
    "INVALID_ARGUMENT": InvalidInputError,
    "NOT_FOUND": ServerError,
    "OUT_OF_RANGE": InvalidInputError,
    "PERMISSION_DENIED": AuthenticationError,
    "RESOURCE_EXHAUSTED": InvalidInputError,
    "UNAUTHENTICATED": AuthenticationError,
    "UNAVAILABLE": ServerUnavailableError,
    "UNIMPLEMENTED": ServerError,
    "UNKNOWN": ServerError,
}


def translate(error: Exception) -> QAError:
    """A tritonclient ``InferenceServerException`` (or any error of a call) as a ``QAError``."""
    status_of = getattr(error, "status", None)
    status = (status_of() if callable(status_of) else None) or ""
    status = status.rsplit(".", 1)[-1]  # "StatusCode.INVALID_ARGUMENT" -> "INVALID_ARGUMENT"
    message_of = getattr(error, "message", None)
    message = (message_of() if callable(message_of) else None) or str(error)
    if message.startswith("in ensemble '"):  # "in ensemble 'electra_qa', question 0 is empty ..."
        message = message.split("', ", 1)[-1]
    if "restricted" in message and "header" in message:  # Triton's --grpc-restricted-protocol refusal
        return AuthenticationError(message)
    if status == "NOT_FOUND" and "has no available versions" in message:  # a model (re)loading or unloading
        return ServerUnavailableError(message)
    if status == "INTERNAL" and re.search(r"Stub process '.*' is not healthy", message):
        return ServerUnavailableError(message)  # a Python-backend process died; `make serve` restarts the server
    if status == "RESOURCE_EXHAUSTED" and message.startswith("Received message larger than max"):
        # the reply exceeded the client's receive limit (ChannelSettings.max_receive_bytes): the server's doing
        return ServerError(f"the server's reply is larger than this client takes: {message}", status)
    kind = _BY_STATUS.get(status, ServerError)
    if kind is ServerError:
        return ServerError(f"{status or 'error'}: {message}", status or None)
    return kind(message)
