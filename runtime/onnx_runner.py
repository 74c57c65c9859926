"""The encoder step on the exported ONNX graph: ONNX Runtime (``OnnxQARunner``, the CPU default, exact parity)
or OpenVINO (``runtime.openvino_runner``, bf16 on CPUs with bf16 matrix units), over windows of many requests,
length-aware.

Windows of all requests in a dynamic batch are sorted by length and run in chunks of at most
``max_windows_per_run``, each padded only to its own longest window; the logits go back to each request
in its own window order and width.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from preprocessing.arrays import stack_padded
from runtime.model_inputs import PaddingStats, per_request
from runtime.tensors import GRAPH_INPUTS as INPUT_NAMES
from runtime.tensors import GRAPH_OUTPUTS as OUTPUT_NAMES
from runtime.tensors import unpack_tokens


class GraphRunner:
    """``run(requests)`` over the exported graph; an engine gives ``_infer`` (one run of ``[n, width]`` feeds)."""

    device = "cpu"
    # the graph's inputs, as the export wrote it: the model's own (RoBERTa and DistilBERT take no token types)
    input_names: tuple[str, ...] = INPUT_NAMES

    def __init__(self, max_windows_per_run: int):
        if max_windows_per_run < 1:
            raise ValueError(f"max_windows_per_run must be >= 1, got {max_windows_per_run}")
        self.max_windows_per_run = max_windows_per_run

    def _graph_inputs(self, names: Sequence[str]) -> None:
        """Take the graph's own inputs (``names``), which must be among ``INPUT_NAMES``."""
        unknown = sorted(set(names) - set(INPUT_NAMES))
        if unknown or "input_ids" not in names:
            raise ValueError(f"the graph takes {list(names)}; the step feeds input_ids and any of {INPUT_NAMES}")
        self.input_names = tuple(name for name in INPUT_NAMES if name in names)

    def _infer(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(start_logits, end_logits) ``[n, width]`` of the graph's ``feeds`` (``INPUT_NAMES``, ``[n, width]``)."""
        raise NotImplementedError

    def run(self, requests: Sequence[np.ndarray]) -> tuple[list[np.ndarray], PaddingStats]:
        """``requests``: per request its windows' packed ``tokens`` (``runtime.tensors``), ``[W_i, L_i]`` int64.
        Returns per request its logits ``[W_i, L_i, 2]`` float32, and the tokens run."""
        # padding packs to 0: pad id 0, no attention
        columns = dict(zip(INPUT_NAMES, unpack_tokens(stack_padded(requests, 0))))
        lengths = columns["attention_mask"].sum(axis=1)
        logits = np.zeros((*columns["input_ids"].shape, 2), np.float32)
        order = np.argsort(-lengths, kind="stable")
        executed = 0
        for begin in range(0, len(order), self.max_windows_per_run):
            chunk = order[begin : begin + self.max_windows_per_run]
            width = int(lengths[chunk].max())
            start, end = self._infer({name: columns[name][chunk, :width] for name in self.input_names})
            logits[chunk, :width] = np.stack((start, end), axis=-1)
            executed += len(chunk) * width
        return per_request(logits, requests), PaddingStats(real_tokens=int(lengths.sum()), executed_tokens=executed)


class OnnxQARunner(GraphRunner):
    """ONNX Runtime on the exported graph: on the CPU, or on CUDA with onnxruntime-gpu (``device``)."""

    def __init__(
        self, onnx_file: str | Path, device: str = "auto", intra_op_threads: int = 0, max_windows_per_run: int = 8
    ):
        import onnxruntime as ort

        super().__init__(max_windows_per_run)
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeError(f"device=cuda but onnxruntime offers only {available} (install onnxruntime-gpu)")
        use_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        # no busy-waiting between runs: the tokenizer and decoder steps share these cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_file), options, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._graph_inputs([i.name for i in self.session.get_inputs()])

    def _infer(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.session.run(list(OUTPUT_NAMES), feeds)
        return start, end
