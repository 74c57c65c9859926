"""Requests built by hand with tritonclient, as any gRPC client can send them: the tests' one request builder
(tensors of any dtype and shape, to any model, with any parameters)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import ENSEMBLE

TRITON_DTYPES = {"int64": "INT64", "int32": "INT32", "float32": "FP32", "object": "BYTES", "bytes": "BYTES"}


def strings(values: Iterable, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A BYTES array: str values encoded as UTF-8, bytes as they are."""
    array = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object)
    return array.reshape(shape) if shape is not None else array


def tensor(name: str, array: np.ndarray, dtype: str | None = None) -> grpcclient.InferInput:
    """An input of ``array``'s shape; its Triton dtype follows numpy's unless given (to send a wrong one)."""
    infer_input = grpcclient.InferInput(name, list(array.shape), dtype or TRITON_DTYPES[array.dtype.name])
    infer_input.set_data_from_numpy(array)
    return infer_input


def question_context(question: str, context: str, batched: bool) -> list[grpcclient.InferInput]:
    """One (question, context) pair: shaped [1, 1] for a step that batches (the tokenizer), [1] for the ensemble."""
    shape = (1, 1) if batched else (1,)
    return [tensor(name, strings([text], shape)) for name, text in (("question", question), ("context", context))]


def infer(server, model: str, tensors: Mapping[str, np.ndarray] | list, parameters=None, **kwargs):
    """One ModelInfer call: ``tensors`` maps names to arrays, or is a list of ready ``tensor``s."""
    inputs = tensors if isinstance(tensors, list) else [tensor(name, array) for name, array in tensors.items()]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    return client.infer(model, inputs, parameters=parameters, **kwargs)


def ask(server, questions, contexts, parameters=None, **kwargs):
    """``electra_qa`` with the given question and context values (any shape: an empty list gives shape [0])."""
    return infer(
        server,
        ENSEMBLE,
        {
            "question": strings(questions) if len(questions) else np.empty(0, object),
            "context": strings(contexts) if len(contexts) else np.empty(0, object),
        },
        parameters,
        **kwargs,
    )


def refused(server, model: str, tensors, parameters=None, status: str = "StatusCode.INVALID_ARGUMENT") -> str:
    """The message of the error ``infer`` gets, which must have ``status``."""
    with pytest.raises(InferenceServerException) as error:
        infer(server, model, tensors, parameters)
    assert error.value.status() == status, error.value.message()
    return error.value.message()


def deep_json_body(depth: int = 200_000) -> bytes:
    """An inference body whose parameters nest ``depth`` arrays deep: Triton 2.51's recursive JSON parser
    overflows tritonserver's stack on it (SIGSEGV; 100,000 deep survives)."""
    return ('{"parameters":{"x":' + "[" * depth + "]" * depth + '},"inputs":[]}').encode()
