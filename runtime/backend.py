"""Glue shared by the Python-backend models in ``model_repository/``: config parameters and error replies.

Kept free of ``triton_python_backend_utils`` imports (that module exists only inside the backend's stub
process): callers pass it in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from preprocessing.errors import InputError


def config_parameters(args: Mapping[str, str]) -> dict[str, str]:
    """The ``parameters { key: ... value: { string_value: ... } }`` of a model's config.pbtxt."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def version_dir(args: Mapping[str, str]) -> Path:
    """The model version's directory, where the export command puts model files."""
    return Path(args["model_repository"]) / args["model_version"]


def error_response(pb_utils: Any, error: Exception):
    """An error reply for one request: INVALID_ARGUMENT for the caller's mistakes, INTERNAL otherwise."""
    if isinstance(error, InputError):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
    message = f"{error.__class__.__name__}: {error}"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))
