"""The errors a request is refused with: ``InputError`` for the caller's mistake, which it must fix (gRPC
INVALID_ARGUMENT); ``StepFault`` for the server's own failure on that request, said to the caller (INTERNAL with
its message). The server's overload, worth retrying, is ``runtime.scheduling.Busy`` (UNAVAILABLE)."""


class InputError(ValueError):
    """The request is invalid; the message names what is wrong."""


class StepFault(RuntimeError):
    """A step failed on this request through no fault of the caller's, and the message (no paths, no internals)
    says what happened: the request gets INTERNAL with it instead of a wrong answer."""
