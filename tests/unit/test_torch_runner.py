"""The torch engine of the encoder step (runtime.torch_runner): logits equal transformers' and ONNX Runtime's on
the tiny random checkpoint, for ragged requests; token counts; refusal of checkpoints it would not reproduce."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from runtime.encoders import UnsupportedCheckpoint
from runtime.model_inputs import PaddingStats
from runtime.onnx_runner import OnnxQARunner
from runtime.tensors import ATTENTION_BIT, pack_tokens, unpack_tokens
from runtime.torch_runner import TorchQARunner, runs_on
from tests.conftest import ROOT

ATOL = 1e-4
VOCAB = 30522


def windows(rng: np.random.Generator, lengths: list[int], width: int, vocab: int = VOCAB):
    """(input_ids, attention_mask, token_type_ids) int64 [len(lengths), width]: each window a question (type 0)
    then context (type 1) of its length, right padded with zeros."""
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, vocab, length)
        mask[row, :length] = 1
        types[row, length // 3 : length] = 1
    return ids, mask, types


def ragged_requests(vocab: int = VOCAB) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [
        windows(rng, [40, 33, 12], 40, vocab),  # several windows, padded
        windows(rng, [1], 1, vocab),  # a one-token window
        windows(rng, [1, 5], 9, vocab),  # one-token window, padded
        windows(rng, list(rng.integers(2, 70, 21)), 70, vocab),  # many windows, more than one run
        windows(rng, [100], 128, vocab),  # padded well past its length
    ]


def reference_logits(model, request) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(
            **{name: torch.from_numpy(t) for name, t in zip(("input_ids", "attention_mask", "token_type_ids"), request)}
        )
    return out.start_logits.numpy(), out.end_logits.numpy()


def packed(requests) -> list[np.ndarray]:
    """The runners' input: each request's windows as packed ``tokens``."""
    return [pack_tokens(*request) for request in requests]


def start_end(logits):
    """(start, end) of a runner's logits [W, L, 2], or of the reference's pair."""
    return (logits[..., 0], logits[..., 1]) if isinstance(logits, np.ndarray) else logits


def assert_same_logits(got, expected, requests, atol=ATOL) -> None:
    """Equal on every window's real tokens (padded positions are the decoder's to mask)."""
    assert len(got) == len(expected) == len(requests)
    for logits, reference, request in zip(got, expected, requests):
        assert logits.shape == (*request[0].shape, 2) and logits.dtype == np.float32 and logits.flags.c_contiguous
        mask = request[1].astype(bool)
        for have, want in zip(start_end(logits), start_end(reference)):
            np.testing.assert_allclose(have[mask], want[mask], rtol=0, atol=atol)


@pytest.fixture(scope="module")
def hf_model(tiny_checkpoint):
    from transformers import ElectraForQuestionAnswering

    return ElectraForQuestionAnswering.from_pretrained(str(tiny_checkpoint), attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def onnx_file(tiny_checkpoint, tmp_path_factory):
    from serving.export import copy_repository, export

    repository = tmp_path_factory.mktemp("torch-runner") / "model_repository"
    export(str(tiny_checkpoint), repository=copy_repository(ROOT / "model_repository", repository))
    return repository / "encoder" / "1" / "model.onnx"


def edited_checkpoint(source, target, config_changes=None, drop=None, add=None):
    """A copy of checkpoint ``source`` with config.json keys changed and tensors dropped or added."""
    from safetensors.torch import load_file, save_file

    target.mkdir()
    config = json.loads((source / "config.json").read_text())
    config.update(config_changes or {})
    (target / "config.json").write_text(json.dumps(config))
    state = load_file(str(source / "model.safetensors"))
    if drop:
        del state[drop]
    state.update(add or {})
    save_file(state, str(target / "model.safetensors"))
    return target


@pytest.mark.parametrize(
    "knobs",
    [
        dict(),
        dict(max_windows_per_run=4, length_bucket=16),
        dict(max_windows_per_run=64, max_tokens_per_run=150, length_bucket=32),
    ],
)
def test_logits_equal_transformers_on_ragged_requests(tiny_checkpoint, hf_model, knobs):
    runner = TorchQARunner(tiny_checkpoint, device="cpu", **knobs)
    assert runner.device == "cpu" and runner.precision == "fp32"
    requests = ragged_requests()
    got, _ = runner.run(packed(requests))
    assert_same_logits(got, [reference_logits(hf_model, r) for r in requests], requests)


def test_logits_equal_onnx_runtime(tiny_checkpoint, onnx_file):
    requests = ragged_requests()
    tokens = packed(requests)
    onnx_logits, onnx_tokens = OnnxQARunner(onnx_file, device="cpu", max_windows_per_run=8).run(tokens)
    torch_logits, torch_tokens = TorchQARunner(tiny_checkpoint, device="cpu", max_windows_per_run=8).run(tokens)
    assert_same_logits(torch_logits, onnx_logits, requests)
    assert torch_tokens == onnx_tokens  # same runs: exact widths on CPU, 8 windows per run


def test_a_window_gets_the_same_logits_alone_as_batched_with_longer_ones(tiny_checkpoint):
    runner = TorchQARunner(tiny_checkpoint, device="cpu")
    rng = np.random.default_rng(3)
    alone = windows(rng, [17], 17)
    batched = tuple(
        np.concatenate([np.pad(a, ((0, 0), (0, 83))), b]) for a, b in zip(alone, windows(rng, [100, 64], 100))
    )
    start, end = start_end(runner.run(packed([alone]))[0][0])
    start_b, end_b = start_end(runner.run(packed([batched]))[0][0])
    np.testing.assert_allclose(start_b[0, :17], start[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(end_b[0, :17], end[0], rtol=0, atol=1e-5)


def test_padding_stats_count_real_and_executed_tokens(tiny_checkpoint):
    rng = np.random.default_rng(0)
    requests = [windows(rng, [10, 3], 12), windows(rng, [7, 1], 7)]
    # sorted 10, 7, 3, 1; runs of 2 windows at widths rounded up to 8: [10, 7] at 16, [3, 1] at 8
    runner = TorchQARunner(tiny_checkpoint, device="cpu", max_windows_per_run=2, length_bucket=8)
    _, tokens = runner.run(packed(requests))
    assert tokens == PaddingStats(real_tokens=21, executed_tokens=2 * 16 + 2 * 8)
    # at most 12 executed tokens per run, exact widths: [10] at 10, [7] at 7, [3, 1] at 3
    _, tokens = TorchQARunner(tiny_checkpoint, device="cpu", max_tokens_per_run=12).run(packed(requests))
    assert tokens == PaddingStats(real_tokens=21, executed_tokens=10 + 7 + 2 * 3)
    assert TorchQARunner(tiny_checkpoint, device="cpu").run(packed([])) == ([], PaddingStats(0, 0))


def test_run_shapes_with_graph_buckets_pad_batches_with_dummy_windows(tiny_checkpoint, hf_model):
    """The CUDA-graph planning (batch and length buckets, dummy windows), with the graphs replaced by eager runs of
    the same static shapes so that it runs on CPU."""
    runner = TorchQARunner(tiny_checkpoint, device="cpu", max_windows_per_run=8, length_bucket=32)
    runner.cuda_graphs = True
    runner.graph_batch_sizes = [1, 2, 4, 8]
    runner.graph_lengths = frozenset(range(32, 97, 32))
    shapes = []

    class EagerGraph:
        def replay(self, tokens):
            assert (tokens[:, 0] >= ATTENTION_BIT).all()  # dummy windows hold a token
            shapes.append(tuple(tokens.shape))
            return runner.model(*unpack_tokens(tokens)).float()

    runner._graphs = {shape: EagerGraph() for shape in runner.graph_shapes()}
    rng = np.random.default_rng(5)
    requests = [windows(rng, [120, 90, 60, 50, 40, 30], 120), windows(rng, [20, 10, 5], 20)]
    got, tokens = runner.run(packed(requests))
    assert_same_logits(got, [reference_logits(hf_model, r) for r in requests], requests)
    # 120 -> width 128, past the graphs' lengths: eager, 8 windows (the most per run); then [5] at width 32: graph
    assert shapes == [(1, 32)] and tokens == PaddingStats(real_tokens=425, executed_tokens=8 * 128 + 1 * 32)
    requests = [windows(rng, [90, 60, 50], 90), windows(rng, [20, 10], 20)]
    got, tokens = runner.run(packed(requests))
    assert_same_logits(got, [reference_logits(hf_model, r) for r in requests], requests)
    # [90, 60, 50, 20, 10] in one run at width 96, padded to the batch bucket 8
    assert shapes == [(1, 32), (8, 96)] and tokens == PaddingStats(real_tokens=230, executed_tokens=8 * 96)


def test_a_shape_without_a_graph_runs_eagerly_and_is_never_captured_while_serving(tiny_checkpoint, hf_model):
    """Graphs are captured at load only (``warmup``): a run shape that has none is run eagerly, here on the CPU
    where a capture would fail."""
    runner = TorchQARunner(tiny_checkpoint, device="cpu", max_windows_per_run=8, length_bucket=32)
    runner.cuda_graphs = True  # as on CUDA, with no graph captured
    requests = ragged_requests()
    got, _ = runner.run(packed(requests))
    assert_same_logits(got, [reference_logits(hf_model, r) for r in requests], requests)
    assert runner.graphs_captured == 0


def test_the_cuda_graphs_count_must_be_the_run_shapes(tiny_checkpoint):
    """Batch buckets 1, 2, 4, 8 x lengths 32 to 384 by 32: 48 shapes; another count is refused at load, saying
    what to set."""
    runner = TorchQARunner(tiny_checkpoint, device="cpu", max_windows_per_run=8, length_bucket=32, cuda_graphs=48)
    assert len(runner.graph_shapes()) == 48 and runner.graph_shapes()[0] == (8, 384)
    assert not runner.cuda_graphs and runner.warmup() == 0  # counted, never captured on a CPU
    with pytest.raises(ValueError, match=r"cuda_graphs is 64, but the run shapes are 48 .*: set it to 48, or 0"):
        TorchQARunner(tiny_checkpoint, device="cpu", max_windows_per_run=8, length_bucket=32, cuda_graphs=64)
    # fewer tokens per run leave out the largest shapes
    few = TorchQARunner(tiny_checkpoint, device="cpu", max_windows_per_run=8, max_tokens_per_run=1024, cuda_graphs=0)
    assert max(b * w for b, w in few.graph_shapes()) <= 1024


def test_the_gpu_configs_cuda_graphs_count_is_its_run_shapes(tiny_checkpoint):
    """configs/torch.pbtxt's count holds for its buckets and the tokenizer's windows (checked wherever it loads)."""
    from runtime.backend import config_file_parameters
    from tests.conftest import ROOT

    parameters = config_file_parameters(ROOT / "model_repository" / "encoder" / "configs" / "torch.pbtxt")
    max_seq_len = int(config_file_parameters(ROOT / "model_repository" / "tokenizer" / "config.pbtxt")["max_seq_len"])
    runner = TorchQARunner(
        tiny_checkpoint,
        device="cpu",
        max_windows_per_run=int(parameters["max_windows_per_run"]),
        max_tokens_per_run=int(parameters["max_tokens_per_run"]),
        length_bucket=int(parameters["length_bucket"]),
        cuda_graphs=int(parameters["cuda_graphs"]),
        graph_max_length=max_seq_len,
    )
    assert len(runner.graph_shapes()) == int(parameters["cuda_graphs"]) == 108


@pytest.mark.parametrize(
    ("capability", "arch_list", "runs"),
    [
        ((9, 0), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], True),
        ((8, 9), ["sm_75", "sm_80", "sm_86", "sm_90"], True),  # sm_86 machine code runs on 8.9
        ((12, 0), ["sm_75", "sm_80", "sm_86", "sm_90"], False),  # Blackwell on a build without it
        ((12, 0), ["sm_80", "sm_90", "compute_90"], True),  # PTX the driver compiles for it
        ((7, 0), ["sm_75", "sm_80", "compute_80"], False),  # older than every kernel
        ((10, 3), ["sm_100", "sm_120"], True),
    ],
)
def test_a_gpu_runs_the_builds_kernels_of_its_major_version_or_its_ptx(capability, arch_list, runs):
    assert runs_on(capability, arch_list) is runs


@pytest.mark.parametrize("precision,atol", [("bf16", 0.3), ("fp16", 0.05)])  # logits reach ~12
def test_half_precisions_on_cpu_stay_close(tiny_checkpoint, precision, atol):
    requests = ragged_requests()
    expected, _ = TorchQARunner(tiny_checkpoint, device="cpu").run(packed(requests))
    try:
        runner = TorchQARunner(tiny_checkpoint, device="cpu", precision=precision)
        got, _ = runner.run(packed(requests))
    except (RuntimeError, NotImplementedError) as error:
        pytest.skip(f"{precision} on this CPU: {error}")
    assert runner.precision == precision
    assert_same_logits(got, expected, requests, atol=atol)


@pytest.mark.parametrize(
    "change",
    [
        dict(config_changes={"hidden_act": "relu"}),
        dict(config_changes={"position_embedding_type": "relative_key"}),
        dict(config_changes={"model_type": "xlnet"}),
        dict(config_changes={"model_type": "albert"}),  # ALBERT's encoder, ELECTRA's tensors
        dict(config_changes={"num_hidden_layers": 3}),  # a layer's tensors are missing
        dict(config_changes={"num_hidden_layers": 1}),  # a layer's tensors are unused
        dict(config_changes={"intermediate_size": 48}),  # tensors do not fit the config
        dict(config_changes={"num_attention_heads": 3}),  # 32 not a multiple of 3
        dict(drop="electra.encoder.layer.1.attention.self.key.bias"),
        dict(add={"electra.embeddings_project.weight": torch.zeros(32, 32)}),
    ],
    ids=[
        "hidden_act",
        "relative_positions",
        "a_family_it_does_not_run",
        "another_familys_names",
        "missing_layer",
        "unused_layer",
        "wrong_shape",
        "heads",
        "missing_tensor",
        "unused_tensor",
    ],
)
def test_a_checkpoint_it_would_not_reproduce_is_refused(tiny_checkpoint, tmp_path, change):
    with pytest.raises(UnsupportedCheckpoint):
        TorchQARunner(edited_checkpoint(tiny_checkpoint, tmp_path / "edited", **change), device="cpu")


def test_bad_arguments_are_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        TorchQARunner(tiny_checkpoint, device="cpu", precision="int8")
    with pytest.raises(ValueError, match="device"):
        TorchQARunner(tiny_checkpoint, device="tpu")
    with pytest.raises(FileNotFoundError, match="config.json"):
        TorchQARunner(tmp_path, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            TorchQARunner(tiny_checkpoint, device="cuda")
        assert TorchQARunner(tiny_checkpoint).device == "cpu"
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at most 512"):
        TorchQARunner(tiny_checkpoint, device="cpu").run(packed([windows(rng, [513], 513)]))


@pytest.mark.parametrize("embedding_size", [768, 128])
def test_base_shaped_layers_equal_transformers(tmp_path, embedding_size):
    """12 heads of 64 over hidden 768 (the served model's layer shape; 2 layers, small vocabulary), and ELECTRA's
    embedding projection when embedding_size differs from hidden_size."""
    from transformers import ElectraConfig, ElectraForQuestionAnswering

    torch.manual_seed(0)
    config = ElectraConfig(
        vocab_size=1000,
        embedding_size=embedding_size,
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    )
    model = ElectraForQuestionAnswering(config).eval()
    model.save_pretrained(tmp_path)
    requests = ragged_requests(vocab=1000)[:3]
    got, _ = TorchQARunner(tmp_path, device="cpu").run(packed(requests))
    assert_same_logits(got, [reference_logits(model, r) for r in requests], requests)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_fp16_stays_close_to_fp32_with_and_without_graphs(tiny_checkpoint, hf_model, cuda_graphs):
    runner = TorchQARunner(tiny_checkpoint, device="cuda", cuda_graphs=48 if cuda_graphs else 0, max_windows_per_run=8)
    assert runner.device == "cuda" and runner.precision == "fp16"
    assert runner.warmup() == (48 if cuda_graphs else 0)  # batch 1, 2, 4, 8 x widths 32, 64, ... 384
    requests = ragged_requests()
    for _ in range(2):  # captured, then replayed
        got, _ = runner.run(packed(requests))
        assert_same_logits(got, [reference_logits(hf_model, r) for r in requests], requests, atol=0.05)
    exact, _ = TorchQARunner(tiny_checkpoint, device="cuda", precision="fp32").run(packed(requests))
    assert_same_logits(exact, [reference_logits(hf_model, r) for r in requests], requests, atol=1e-3)


FAMILY_VARIANTS = {
    # ALBERT's sharing: 4 passes through 2 groups of 2 layers, its embeddings projected up, the tanh GELU
    "albert-groups": (
        "AlbertConfig",
        dict(embedding_size=16, num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2, hidden_act="gelu_new"),
    ),
    # DeBERTa-v3's layout: shared attention keys, layer-normalised relative table, distances bucketed
    # logarithmically past 4 (windows here reach 128), no absolute positions, no token types
    "deberta-v3": (
        "DebertaV2Config",
        dict(
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=8,
            max_relative_positions=64,
            share_att_key=True,
            norm_rel_ebd="layer_norm",
            position_biased_input=False,
            type_vocab_size=0,
        ),
    ),
    # DeBERTa-v2's other switches: its own relative projections, one term only, distances not bucketed,
    # absolute positions and token types added, narrower embeddings projected up
    "deberta-v2-separate": (
        "DebertaV2Config",
        dict(
            relative_attention=True,
            pos_att_type="c2p",
            position_buckets=-1,
            share_att_key=False,
            position_biased_input=True,
            type_vocab_size=2,
            embedding_size=16,
        ),
    ),
    "deberta-v2-position-to-content": (
        "DebertaV2Config",
        dict(relative_attention=True, pos_att_type=["p2c"], share_att_key=False, max_relative_positions=32),
    ),
    "deberta-absolute-only": ("DebertaV2Config", dict(relative_attention=False, type_vocab_size=2)),
    # DeBERTa-v2 xlarge's convolution over the embeddings, added to the first layer's output
    "deberta-v2-convolution": (
        "DebertaV2Config",
        dict(relative_attention=True, pos_att_type=["p2c", "c2p"], conv_kernel_size=3, conv_act="gelu"),
    ),
    "deberta-v2-grouped-convolution": (
        "DebertaV2Config",
        dict(relative_attention=True, pos_att_type=["c2p"], conv_kernel_size=5, conv_groups=2),
    ),
}


def variant_checkpoint(directory, variant: str):
    """A random-weight checkpoint of ``FAMILY_VARIANTS[variant]`` saved in ``directory``, and its transformers
    model, with weights wide enough that attention decides the logits (at the default 0.02 it barely moves
    them)."""
    import transformers

    config_class, switches = FAMILY_VARIANTS[variant]
    torch.manual_seed(0)
    shape = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = getattr(transformers, config_class)(
        **{**shape, **switches}, max_position_embeddings=512, initializer_range=0.5
    )
    model = transformers.AutoModelForQuestionAnswering.from_config(config).eval()
    model.save_pretrained(directory)
    return directory, model


@pytest.mark.parametrize("variant", FAMILY_VARIANTS)
def test_each_familys_switches_equal_transformers(tmp_path, variant):
    """The encoders the torch engine builds for ALBERT and DeBERTa follow every switch of their configs as
    transformers does (random weights, ragged requests; tests/unit/test_families.py serves the default ones)."""
    checkpoint, model = variant_checkpoint(tmp_path, variant)
    requests = ragged_requests(vocab=1000)
    got, _ = TorchQARunner(checkpoint, device="cpu", max_windows_per_run=8).run(packed(requests))
    assert_same_logits(got, [reference_logits(model, r) for r in requests], requests)


@pytest.mark.parametrize("variant", ["albert-groups", "deberta-v3", "deberta-v2-convolution"])
def test_other_families_in_fp16_stay_as_close_to_fp32_as_transformers_own_fp16(tmp_path, variant):
    """The GPU path's precision, here on the CPU: ALBERT's and DeBERTa's encoders in fp16 (masks at fp16's
    lowest, the relative bias in fp16, positions still int64) differ from fp32 by no more than transformers' own
    model in fp16 does (half again, for rounding that falls differently)."""
    checkpoint, model = variant_checkpoint(tmp_path, variant)
    requests = ragged_requests(vocab=1000)
    exact, _ = TorchQARunner(checkpoint, device="cpu").run(packed(requests))
    try:
        got, _ = TorchQARunner(checkpoint, device="cpu", precision="fp16").run(packed(requests))
        theirs = [np.stack(reference_logits(model.half(), r), axis=-1).astype(np.float32) for r in requests]
    except (RuntimeError, NotImplementedError) as error:
        pytest.skip(f"fp16 on this CPU: {error}")

    def farthest(logits) -> float:
        return max(float(np.abs(g - e)[r[1].astype(bool)].max()) for g, e, r in zip(logits, exact, requests))

    assert 0 < farthest(got) <= 1.5 * farthest(theirs)
