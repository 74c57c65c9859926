"""Errors a request is refused with: ``InputError``, the caller's mistake, which it must fix (gRPC
INVALID_ARGUMENT); ``Busy``, the server's overload, worth retrying (UNAVAILABLE)."""


class InputError(ValueError):
    """The request is invalid; the message names what is wrong."""


class Busy(RuntimeError):
    """The step had no time left for the request in this batch (overload); the caller may retry."""
