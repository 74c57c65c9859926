"""The encoder step on PyTorch: the same contract as ``runtime.onnx_runner.OnnxQARunner``, for GPU and CPU.

Runs the encoder that reproduces the checkpoint's family (``runtime.encoders``;
weights read from a Hugging Face checkpoint directory) over the windows of many requests. Windows are sorted by
length (longest first) and cut into runs of at most ``max_windows_per_run`` windows and ``max_tokens_per_run``
executed tokens; each run is padded to its longest window rounded up to a multiple of ``length_bucket`` (1 on CPU:
no rounding). On CUDA the network runs in fp16 under ``torch.inference_mode()``, optionally replayed from CUDA
graphs of every (batch bucket, length bucket), all captured at load: runs are then padded up to the next batch
bucket with dummy windows. Shapes outside the buckets run eagerly; nothing is captured while serving (a capture
synchronises the GPU and empties its allocator's cache). Nothing here imports Triton.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from preprocessing.arrays import stack_padded
from runtime.encoders import read_checkpoint
from runtime.model_inputs import PaddingStats, per_request
from runtime.tensors import ATTENTION_BIT, unpack_tokens

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchQARunner:
    """``run(requests)`` -> (per request its logits ``[W_i, L_i, 2]`` float32; PaddingStats).

    ``checkpoint``: directory with ``config.json`` and ``model.safetensors`` of an ``ElectraForQuestionAnswering``.
    ``device``: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    ``precision``: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
    ``intra_op_threads``: torch's CPU threads (``torch.set_num_threads``, process-wide); 0 leaves torch's default.
    ``max_windows_per_run`` / ``max_tokens_per_run``: bound one forward pass (windows, and windows x padded width).
    ``length_bucket``: runs are padded to a multiple of it; 0 = auto (32 with CUDA graphs, 8 on CUDA, 1 on CPU).
    ``cuda_graphs``: how many CUDA graphs ``warmup`` captures, one per run shape (``graph_shapes``:
    ``graph_batch_sizes`` x multiples of ``length_bucket`` up to ``graph_max_length``, the tokenizer's window, at
    most ``max_tokens_per_run`` tokens each); it must be that count (written in the config, checked here
    wherever the runner loads) or 0 for none. ``graph_batch_sizes`` defaults to 1, 2, 4, ... and
    ``max_windows_per_run``. Graphs are captured and replayed on CUDA only.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        precision: str = "auto",
        intra_op_threads: int = 0,
        max_windows_per_run: int = 16,
        max_tokens_per_run: int = 8192,
        length_bucket: int = 0,
        cuda_graphs: int = 0,
        graph_batch_sizes: Sequence[int] | None = None,
        graph_max_length: int = 384,
    ):
        if max_windows_per_run < 1 or max_tokens_per_run < 1 or length_bucket < 0 or cuda_graphs < 0:
            raise ValueError(
                "max_windows_per_run and max_tokens_per_run must be >= 1, length_bucket and cuda_graphs >= 0"
            )
        self._device = _resolve_device(device)
        on_cuda = self._device.type == "cuda"
        if precision == "auto":
            precision = "fp16" if on_cuda else "fp32"
        if precision not in DTYPES:
            raise ValueError(f"precision must be auto, {', '.join(DTYPES)}; got {precision!r}")
        if on_cuda and precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"precision=bf16 but {torch.cuda.get_device_name(self._device)} has no bf16")
        self.precision = precision
        self.dtype = DTYPES[precision]
        if intra_op_threads > 0:
            torch.set_num_threads(intra_op_threads)
        if on_cuda:
            torch.cuda.set_device(self._device)  # graph capture and side streams use the current device
            # fp32 stays exact fp32 (no TF32), for parity with the reference; fp16/bf16 use tensor cores anyway
            torch.set_float32_matmul_precision("highest")

        shape, state = read_checkpoint(checkpoint)
        self.max_position_embeddings = shape.max_positions
        self.model = shape.build(state).to(device=self._device, dtype=self.dtype)
        del state

        self.max_windows_per_run = max_windows_per_run
        self.max_tokens_per_run = max_tokens_per_run
        self.length_bucket = length_bucket or (32 if cuda_graphs else 8 if on_cuda else 1)
        sizes = graph_batch_sizes or [*_powers_of_two_below(max_windows_per_run), max_windows_per_run]
        self.graph_batch_sizes = sorted({b for b in sizes if 1 <= b <= max_windows_per_run})
        top = min(graph_max_length, self.max_position_embeddings)
        self.graph_lengths = frozenset(range(self.length_bucket, top + 1, self.length_bucket))
        shapes = self.graph_shapes()
        if cuda_graphs and cuda_graphs != len(shapes):
            raise ValueError(
                f"cuda_graphs is {cuda_graphs}, but the run shapes are {len(shapes)} (batch sizes "
                f"{', '.join(map(str, self.graph_batch_sizes))} x lengths {self.length_bucket} to {top} by "
                f"{self.length_bucket}, at most {max_tokens_per_run} tokens each): set it to {len(shapes)}, or 0"
            )
        self.cuda_graphs = on_cuda and cuda_graphs > 0
        self._graphs: dict[tuple[int, int], _CapturedRun] = {}  # captured by warmup, every shape or none
        self._lock = threading.Lock()  # one run at a time: graphs' static buffers are shared

    @property
    def device(self) -> str:
        return self._device.type

    def run(self, requests: Sequence[np.ndarray]) -> tuple[list[np.ndarray], PaddingStats]:
        """``requests``: per request its windows' packed ``tokens`` (``runtime.tensors``), ``[W_i, L_i]`` int64,
        right padded. Returns per request its logits ``[W_i, L_i, 2]`` float32 (positions past a window's tokens
        hold arbitrary values), and the tokens run.

        Host work is per execute, not per run: the windows are stacked, sorted and copied to the device once,
        unpacked there (inside the CUDA graph when one replays), and the logits of every run are gathered on the
        device and copied back once; the runs are queued without waiting for each other."""
        if not requests:
            return [], PaddingStats(real_tokens=0, executed_tokens=0)
        stacked = stack_padded(requests, 0)  # padding packs to 0: pad id 0, no attention
        full_width = stacked.shape[1]
        if full_width > self.max_position_embeddings:
            raise ValueError(f"windows of {full_width} tokens; the model takes at most {self.max_position_embeddings}")
        lengths = (stacked >= ATTENTION_BIT).sum(axis=1)
        order = np.argsort(-lengths, kind="stable")
        runs = self._plan(lengths[order])
        with self._lock, torch.inference_mode():
            tokens = torch.from_numpy(stacked[order]).to(self._device)  # one copy to the device, sorted
            logits = torch.zeros((len(order), full_width, 2), dtype=torch.float32, device=self._device)
            for begin, count, batch, width in runs:
                used = min(width, full_width)
                inputs = tokens[begin : begin + count, :used]
                if batch > count or width > used:  # padded to the run's shape; the dummy windows hold one token each
                    inputs = _dummy_tensor(batch, width, self._device)
                    inputs[:count, :used] = tokens[begin : begin + count, :used]
                ran = self._forward(inputs, graph=self._graph_eligible(batch, width))
                logits[begin : begin + count, :used] = ran[:count, :used]
            sorted_logits = logits.cpu().numpy()  # one copy back, the only wait for the device
        unsorted = np.empty_like(sorted_logits)
        unsorted[order] = sorted_logits
        executed = sum(batch * width for _, _, batch, width in runs)
        return per_request(unsorted, requests), PaddingStats(real_tokens=int(lengths.sum()), executed_tokens=executed)

    def _plan(self, lengths: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The runs over windows of ``lengths`` (longest first): (first window, windows, batch executed, width)."""
        runs, begin = [], 0
        while begin < len(lengths):
            width = self._bucket_width(max(int(lengths[begin]), 1))
            count = min(self.max_windows_per_run, max(1, self.max_tokens_per_run // width), len(lengths) - begin)
            runs.append((begin, count, self._graph_batch(count, width), width))
            begin += count
        return runs

    def graph_shapes(self) -> list[tuple[int, int]]:
        """Every (batch, width) a CUDA graph is kept for, largest first."""
        shapes = (
            (b, w) for b in self.graph_batch_sizes for w in self.graph_lengths if b * w <= self.max_tokens_per_run
        )
        return sorted(shapes, key=lambda s: (s[0] * s[1], s), reverse=True)

    def warmup(self) -> int:
        """Run the network once (initialising kernels and libraries) and, with CUDA graphs, capture the graph of
        every run shape, largest first (the shared memory pool is sized by the first). Returns the graphs
        captured. A capture the GPU or driver refuses turns graphs off: the runner then serves eagerly."""
        with self._lock, torch.inference_mode():
            width = min(self.length_bucket * -(-128 // self.length_bucket), self.max_position_embeddings)
            self._forward(_dummy_tensor(1, width, self._device), graph=False)
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            if not self.cuda_graphs:
                return 0
            # one memory pool for all: graphs replay one at a time (under the lock) and each keeps its own inputs
            # and outputs alive, so their intermediates may share memory
            pool = torch.cuda.graph_pool_handle()
            try:
                for batch, width in self.graph_shapes():
                    self._graphs[batch, width] = _CapturedRun(self.model, self._device, batch, width, pool)
            except RuntimeError as error:
                warnings.warn(f"CUDA graphs turned off: a capture failed ({error}); serving eagerly", stacklevel=2)
                self._graphs.clear()
                self.cuda_graphs = False
            torch.cuda.synchronize(self._device)
            return self.graphs_captured

    @property
    def graphs_captured(self) -> int:
        return len(self._graphs)

    def _bucket_width(self, length: int) -> int:
        return min(-(-length // self.length_bucket) * self.length_bucket, self.max_position_embeddings)

    def _graph_eligible(self, batch: int, width: int) -> bool:
        return (
            self.cuda_graphs
            and batch in self.graph_batch_sizes
            and width in self.graph_lengths
            and batch * width <= self.max_tokens_per_run
        )

    def _graph_batch(self, count: int, width: int) -> int:
        """The batch a run of ``count`` windows executes as: the next graph batch bucket when that shape has a
        graph, else ``count`` itself (eager)."""
        if self.cuda_graphs and width in self.graph_lengths:
            for batch in self.graph_batch_sizes:
                if batch >= count:
                    return batch if self._graph_eligible(batch, width) else count
        return count

    def _forward(self, tokens: torch.Tensor, graph: bool) -> torch.Tensor:
        """logits [batch, width, 2] float32 on the device, of packed ``tokens`` [batch, width] there: replayed
        from the shape's graph where one was captured, else run eagerly (never captured here)."""
        captured = self._graphs.get(tuple(tokens.shape)) if graph else None
        if captured is not None:
            try:
                return captured.replay(tokens)
            except RuntimeError as error:  # a replay this GPU or driver refuses: serve eagerly from now on
                warnings.warn(f"CUDA graphs turned off after a failed replay: {error}", stacklevel=2)
                self._graphs.clear()
                self.cuda_graphs = False
        return _packed_forward(self.model, tokens)


def _packed_forward(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(*unpack_tokens(tokens)).float()


class _CapturedRun:
    """One CUDA graph of the network, its tokens unpacked in it, at a fixed (batch, width), with its static input
    and output tensors."""

    def __init__(self, model: torch.nn.Module, device: torch.device, batch: int, width: int, pool) -> None:
        self.inputs = _dummy_tensor(batch, width, device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside capture: kernel selection, library handles
            for _ in range(2):
                _packed_forward(model, self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.outputs = _packed_forward(model, self.inputs)

    def replay(self, tokens: torch.Tensor) -> torch.Tensor:
        self.inputs.copy_(tokens)
        self.graph.replay()
        return self.outputs


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={device} but torch sees no CUDA GPU (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda}: no GPU given to this process, or an NVIDIA driver older than that CUDA needs)"
            )
        resolved = torch.device(device)
        resolved = torch.device("cuda", resolved.index if resolved.index is not None else torch.cuda.current_device())
        capability = torch.cuda.get_device_capability(resolved)
        if not runs_on(capability, torch.cuda.get_arch_list()):
            raise RuntimeError(
                f"{torch.cuda.get_device_name(resolved)} has compute capability {capability[0]}.{capability[1]}, "
                f"which this torch {torch.__version__} (CUDA {torch.version.cuda}) has no kernels for (it has "
                f"{', '.join(torch.cuda.get_arch_list())}): install a torch built for it"
            )
        return resolved
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")


def runs_on(capability: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether a torch built for ``arch_list`` (``torch.cuda.get_arch_list()``: ``sm_XY`` machine code, ``compute_XY``
    PTX) runs on a GPU of compute ``capability``: machine code of the same major version and no newer minor, or
    PTX of no newer capability (which the driver compiles for it)."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        built = (int(digits[:-1]), int(digits[-1])) if digits[:-1].isdigit() and digits[-1:].isdigit() else None
        if built is None:
            continue
        if kind == "sm" and built[0] == major and built[1] <= minor:
            return True
        if kind == "compute" and built <= (major, minor):
            return True
    return False


def _powers_of_two_below(limit: int) -> list[int]:
    sizes, size = [], 1
    while size < limit:
        sizes.append(size)
        size *= 2
    return sizes


def _dummy_tensor(batch: int, width: int, device: torch.device) -> torch.Tensor:
    """Packed tokens [batch, width] of windows holding one token each."""
    tokens = torch.zeros((batch, width), dtype=torch.int64, device=device)
    tokens[:, 0] = ATTENTION_BIT
    return tokens
