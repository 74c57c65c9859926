"""The ELECTRA step: runs the exported ONNX model over windows of many requests, length-aware.

Windows of all requests in a dynamic batch are sorted by length and run in chunks of at most
``max_windows_per_run``, each padded only to its own longest window; the logits go back to each request
in its own window order and width.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from preprocessing.arrays import stack_padded
from runtime.model_inputs import PaddingStats
from runtime.tensors import GRAPH_INPUTS as INPUT_NAMES
from runtime.tensors import GRAPH_OUTPUTS as OUTPUT_NAMES


class OnnxQARunner:
    def __init__(
        self, onnx_file: str | Path, device: str = "auto", intra_op_threads: int = 0, max_windows_per_run: int = 8
    ):
        import onnxruntime as ort

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
        self.max_windows_per_run = max_windows_per_run

    @property
    def device(self) -> str:
        return "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def run(self, requests: Sequence[Sequence[np.ndarray]]) -> tuple[list[tuple[np.ndarray, np.ndarray]], PaddingStats]:
        """``requests``: per request (input_ids, attention_mask, token_type_ids), each ``[W_i, L_i]``.
        Returns per request (start_logits, end_logits), each ``[W_i, L_i]`` float32, and the tokens run."""
        counts = [len(r[0]) for r in requests]
        stacked = [stack_padded([r[k] for r in requests], 0) for k in range(len(INPUT_NAMES))]
        lengths = stacked[1].sum(axis=1)
        start = np.zeros(stacked[0].shape, np.float32)
        end = np.zeros(stacked[0].shape, np.float32)
        order = np.argsort(-lengths, kind="stable")
        executed = 0
        for begin in range(0, len(order), self.max_windows_per_run):
            chunk = order[begin : begin + self.max_windows_per_run]
            width = int(lengths[chunk].max())
            feeds = {name: tensor[chunk, :width] for name, tensor in zip(INPUT_NAMES, stacked)}
            start[chunk, :width], end[chunk, :width] = self.session.run(list(OUTPUT_NAMES), feeds)
            executed += len(chunk) * width
        bounds = np.cumsum(counts)[:-1]
        logits = [
            (s[:, : r[0].shape[1]], e[:, : r[0].shape[1]])
            for s, e, r in zip(np.split(start, bounds), np.split(end, bounds), requests)
        ]
        return logits, PaddingStats(real_tokens=int(lengths.sum()), executed_tokens=executed)
