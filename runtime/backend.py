"""Glue shared by the Python-backend models in ``model_repository/``: config parameters, tensors in and out,
error replies.

Kept free of ``triton_python_backend_utils`` imports (that module exists only inside the backend's stub
process): callers pass it in.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from preprocessing.errors import InputError, StepFault
from preprocessing.outcomes import Outcome, refusal, then
from runtime.scheduling import Busy

# one parameters entry as our configs write it (one line) and as protobuf's text format does (serving.configs)
_PARAMETER = re.compile(r'key:\s*"([^"]+)"\s*value\s*:?\s*\{\s*string_value:\s*"([^"]*)"\s*\}')


def config_parameters(args: Mapping[str, str]) -> dict[str, str]:
    """The ``parameters { key: ... value: { string_value: ... } }`` of a model's config.pbtxt."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def checked_parameters(args: Mapping[str, str], model: str, known: Iterable[str]) -> dict[str, str]:
    """The config's ``parameters``, which must be exactly ``known``: a missing or unknown one raises
    ``ValueError`` (the model does not load) rather than letting a default in code stand for it."""
    parameters, known = config_parameters(args), set(known)
    unknown, missing = sorted(set(parameters) - known), sorted(known - set(parameters))
    if unknown or missing:
        raise ValueError(
            f"{model} config parameters: unknown {unknown or 'none'}, missing {missing or 'none'}; "
            f"the {model} step reads {', '.join(sorted(known))}"
        )
    return parameters


def config_file_parameters(path: Path) -> dict[str, str]:
    """The string ``parameters`` of a config.pbtxt file (``key: "..." value: { string_value: "..." }``)."""
    return dict(_PARAMETER.findall(path.read_text()))


def sibling_parameters(args: Mapping[str, str], model: str, keys: Iterable[str]) -> dict[str, str]:
    """``keys`` of another model's parameters in the same repository (a limit that another step checks too, so
    that it is written once, in its own model's config). Which of that model's configs the server loaded is not
    known here (``--model-config-name`` picks a variant per model, or its config.pbtxt), so all of them
    (config.pbtxt and configs/*.pbtxt) must give each key one value: a key missing from one, or differing between
    them, raises ``ValueError`` naming it and the files (the model does not load)."""
    directory = Path(args["model_repository"]).parent / model
    configs = [directory / "config.pbtxt", *sorted((directory / "configs").glob("*.pbtxt"))]
    found = {str(path.relative_to(directory.parent)): config_file_parameters(path) for path in configs}
    values = {}
    for key in keys:
        seen = {name: parameters.get(key) for name, parameters in found.items()}
        if None in seen.values() or len(set(seen.values())) > 1:
            given = ", ".join(f"{name}: {value if value is not None else 'missing'}" for name, value in seen.items())
            raise ValueError(f"{model}'s {key} must be one value in all of its configs, read here too ({given})")
        (values[key],) = set(seen.values())
    return values


def version_dir(args: Mapping[str, str]) -> Path:
    """The model version's directory, where the export command puts model files."""
    return Path(args["model_repository"]) / args["model_version"]


def input_array(
    pb_utils: Any, request: Any, name: str, dtype: Any | None = None, ndim: int | None = None
) -> np.ndarray:
    """A request's input as numpy, refused with ``InputError`` unless it has ``dtype`` and ``ndim``."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InputError(f"the request has no input '{name}'")
    array = tensor.as_numpy()
    if dtype is not None and array.dtype != dtype:
        raise InputError(f"input '{name}' must be {np.dtype(dtype).name}, got {array.dtype.name}")
    if ndim is not None and array.ndim != ndim:
        raise InputError(f"input '{name}' must have {ndim} dimensions, got shape {list(array.shape)}")
    return array


def response(pb_utils: Any, outputs: Mapping[str, np.ndarray]):
    return pb_utils.InferenceResponse([pb_utils.Tensor(name, value) for name, value in outputs.items()])


def error_response(pb_utils: Any, error: BaseException, model: str):
    """An error reply for one request: INVALID_ARGUMENT naming the caller's mistake, UNAVAILABLE for a request
    the step had no time for (``Busy``, retried by clients), INTERNAL with its message for a ``StepFault`` (also
    logged); for anything else INTERNAL with no detail (no paths, no stack), the details going to the server
    log."""
    if isinstance(error, InputError):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
    if isinstance(error, Busy):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.UNAVAILABLE))
    if isinstance(error, StepFault):
        pb_utils.Logger.log_error(f"{model}: {error}")
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.INTERNAL))
    pb_utils.Logger.log_error(f"{model}: {''.join(traceback.format_exception(error)).rstrip()}")
    message = f"internal error in the {model} step ({error.__class__.__name__}); the server log has the details"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))


def reply(pb_utils: Any, model: str, outcome: Outcome[Any], pack):
    """The reply for one request: ``pack`` of its result, or the error reply when it was refused (or packing it
    failed)."""
    packed = then(outcome, pack)
    error = refusal(packed)
    return packed if error is None else error_response(pb_utils, error, model)


class MemoryTrimmer:
    """Gives the C heap's free pages back to the system after an ``execute`` that handled much data.

    glibc keeps what a large batch freed (in the arenas of the threads that allocated it, HF tokenizers' among
    them) for reuse, so a stub's resident memory stays at its peak. ``malloc_trim(0)`` returns every free page.
    It runs on a thread of its own ``delay_s`` after such an execute, once the stub has sent the execute's
    responses and freed their tensors (measured on the tokenizer stub after 8 concurrent 1,000-window requests:
    689 MB resident without trimming, 405 MB trimming at the end of the execute, ~220 MB trimming after the
    responses are sent). Small executes do not trim. A no-op where the C library is not glibc.
    """

    def __init__(self, threshold: int, delay_s: float = 0.2):
        self.threshold, self.delay_s = threshold, delay_s
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None
        self._due = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0

    def after(self, work: int) -> bool:
        """Schedule a trim when ``work`` (the caller's measure of an execute: characters, windows) reaches the
        threshold; whether it did."""
        if self._trim is None or work < self.threshold:
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
            self._thread.start()
        self._due.set()
        return True

    def _run(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self.delay_s)  # the stub sends the responses meanwhile
            self._due.clear()
            self._trim(0)  # ctypes releases the GIL: the stub keeps serving
            self.trims += 1


class Counters:
    """Prometheus counters of a step (a ``pb_utils.MetricFamily`` COUNTER, one metric per label value), added to
    in ``execute`` at no cost and sent to Triton every ``interval_s`` by a thread of their own: each
    ``Metric.increment`` is a round trip to the server process (measured: ~5% of the tokenizer stub's CPU when
    made in every execute)."""

    def __init__(self, pb_utils: Any, name: str, description: str, label: str, values: Iterable[str], interval_s=1.0):
        self.family = pb_utils.MetricFamily(  # must outlive its Metric objects
            name=name, description=description, kind=pb_utils.MetricFamily.COUNTER
        )
        self.metrics = {value: self.family.Metric(labels={label: value}) for value in values}
        self.interval_s = interval_s
        self._pending = dict.fromkeys(self.metrics, 0)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"{name}-flush", daemon=True)
        self._thread.start()

    def add(self, value: str, count: int) -> None:
        with self._lock:
            self._pending[value] += count

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, dict.fromkeys(self.metrics, 0)
        for value, count in pending.items():
            if count:
                self.metrics[value].increment(count)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.flush()
