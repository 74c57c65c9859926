"""The error a request is refused with for the caller's mistake, which it must fix: ``InputError`` (gRPC
INVALID_ARGUMENT). The server's overload, worth retrying, is ``runtime.scheduling.Busy`` (UNAVAILABLE)."""


class InputError(ValueError):
    """The request is invalid; the message names what is wrong."""
