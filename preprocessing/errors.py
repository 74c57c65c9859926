"""Errors that the caller caused and must fix; the server turns them into gRPC INVALID_ARGUMENT."""


class InputError(ValueError):
    """The request is invalid; the message names what is wrong."""
