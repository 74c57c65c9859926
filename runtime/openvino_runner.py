"""The encoder step on OpenVINO: the exported ONNX graph compiled for the CPU, in bf16 on the CPU's bf16 matrix
units (AMX-BF16, AVX512-BF16) or in fp32. Same windows, same length-aware runs and same logits contract as ONNX
Runtime (``runtime.onnx_runner.GraphRunner``). bf16 on a CPU without bf16 units is refused: OpenVINO would
emulate it, slower than fp32 and with bf16's answers. Nothing here imports Triton."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.cpu import describe
from runtime.onnx_runner import GraphRunner
from runtime.tensors import GRAPH_OUTPUTS as OUTPUT_NAMES

# the step's precision word -> OpenVINO's inference precision hint
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class UnsupportedPrecision(RuntimeError):
    """The precision asked for needs matrix units this CPU lacks."""


def bf16_units(core=None) -> bool:
    """Whether OpenVINO finds bf16 matrix units on this CPU (``OPTIMIZATION_CAPABILITIES`` lists ``BF16``)."""
    if core is None:
        import openvino as ov

        core = ov.Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoQARunner(GraphRunner):
    """``precision``: ``bf16`` (needs bf16 matrix units: OpenVINO's ``OPTIMIZATION_CAPABILITIES`` lists ``BF16``)
    or ``fp32`` (set explicitly: OpenVINO's own default on such CPUs is bf16). ``intra_op_threads``: the engine's
    threads (0: every core). One inference stream with every thread (``LATENCY``): the runs are already batches
    of windows from many requests."""

    def __init__(
        self, onnx_file: str | Path, precision: str = "bf16", intra_op_threads: int = 0, max_windows_per_run: int = 8
    ):
        import openvino as ov

        super().__init__(max_windows_per_run)
        if precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}; got {precision!r}")
        core = ov.Core()
        if precision == "bf16" and not bf16_units(core):
            raise UnsupportedPrecision(
                f"precision bf16 needs a CPU with bf16 matrix units (AMX-BF16 or AVX512-BF16); this one has none: "
                f"{describe()}. Serve fp32 on it (make serve ENGINE=onnxruntime)"
            )
        config = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if intra_op_threads > 0:
            config["INFERENCE_NUM_THREADS"] = str(intra_op_threads)
        self.compiled = core.compile_model(core.read_model(str(onnx_file)), "CPU", config)
        self.precision = precision
        self._request = self.compiled.create_infer_request()
        self._outputs = [self.compiled.output(name) for name in OUTPUT_NAMES]
        self._graph_inputs([i.get_any_name() for i in self.compiled.inputs])

    def _infer(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        results = self._request.infer({name: np.ascontiguousarray(array) for name, array in feeds.items()})
        start, end = (np.asarray(results[output], np.float32) for output in self._outputs)
        return start, end
