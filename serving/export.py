"""Export a Hugging Face ELECTRA QA checkpoint into the Triton model repository.

    python -m serving.export --model valhalla/electra-base-discriminator-finetuned_squadv1
    python -m serving.export --model /path/to/checkpoint --repository model_repository

Writes the files the repository's configs name (``ExportedFiles``): ``encoder/1/model.onnx`` (dynamic batch and
sequence axes, checked against the PyTorch logits; the ONNX Runtime engine), ``encoder/1/checkpoint/`` (the
checkpoint itself; the torch engine), ``tokenizer/1/tokenizer.json`` (the fast tokenizer the tokenizer step
loads) and ``encoder/1/export.json`` (what was exported, and how close ONNX came to PyTorch). The server itself
never downloads anything. ``--clean`` removes them. ``--engine`` and ``--precision`` choose the graph
(``runtime.engines``: fp32 or int8). ``--no-onnx`` writes all but the ONNX graph: enough for the torch engine,
not for the others. Every graph is fp16-safe: no float constant outside fp16's finite range
(``fp16_unsafe_constants``), so that no engine lowering it to fp16 turns a mask into infinities and its logits
into NaN.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.backend import config_file_parameters
from runtime.engines import ENGINES, PRECISIONS, graph_precision
from runtime.families import FAMILIES
from runtime.tensors import GRAPH_INPUTS, GRAPH_OUTPUTS, TYPE_BIT
from serving.engines import EngineChoiceError, choose

DEFAULT_MODEL = "valhalla/electra-base-discriminator-finetuned_squadv1"
DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
OPSET = 17
DEFAULT_TOLERANCE = 1e-3  # max |ONNX - PyTorch| over the check inputs' logits


class ExportError(RuntimeError):
    """The checkpoint could not be loaded or its export does not match PyTorch."""


@dataclass(frozen=True)
class ExportRecord:
    """``encoder/1/export.json``: which checkpoint the repository serves."""

    model: str
    fingerprint: str
    max_abs_diff: float | None  # None: exported without the ONNX graph (--no-onnx)
    tolerance: float
    opset: int
    exported_at: str
    fused_operators: dict
    precision: str = "fp32"  # the graph's (runtime.engines.graph_precision)
    family: str = "electra"  # config.json's model_type
    # what the model takes, as the pipeline passes it (the tokenizer's model_input_names): the ``ids`` graph's
    # inputs, and whether token types reach the model at all
    model_inputs: list = field(default_factory=lambda: list(GRAPH_INPUTS))
    # the embedded server's engines that run this export (runtime.engines): onnxruntime always (its graph is the
    # one checked), openvino where it compiles the graph, torch where its encoders build the checkpoint's config
    engines: list = field(default_factory=lambda: ["onnxruntime", "openvino", "torch"])
    unrunnable: dict = field(default_factory=dict)  # each other engine: why it does not run this export
    served_max_abs_diff: float | None = None  # of the int8 graph, when precision is int8
    # what the model step checks requests against: vocab_size, type_vocab_size, max_position_embeddings
    model_limits: dict | None = None


def source_fingerprint(model: str) -> tuple[str, str]:
    """(canonical name, fingerprint) of a hub id or local directory; a changed checkpoint changes both or the
    fingerprint."""
    path = Path(model).expanduser()
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(path.iterdir()):
            if item.is_file():
                stat = item.stat()
                digest.update(f"{item.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return str(path.resolve()), digest.hexdigest()[:16]
    return model, "hub"


def read_record(repository: Path) -> ExportRecord | None:
    try:
        return ExportRecord(**json.loads((repository / "encoder" / "1" / "export.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class ExportedFiles:
    """Where the export writes, as the repository's configs name it (their ``onnx_file``, ``checkpoint_dir`` and
    ``tokenizer_file`` parameters, under version 1)."""

    onnx_file: Path
    checkpoint_dir: Path
    tokenizer_file: Path
    record: Path

    def paths(self) -> tuple[Path, ...]:
        return (self.onnx_file, self.checkpoint_dir, self.tokenizer_file, self.record)

    @classmethod
    def of(cls, repository: Path) -> ExportedFiles:
        model = config_file_parameters(repository / "encoder" / "config.pbtxt")
        tokenizer = config_file_parameters(repository / "tokenizer" / "config.pbtxt")
        model_dir = repository / "encoder" / "1"
        return cls(
            onnx_file=model_dir / model["onnx_file"],
            checkpoint_dir=model_dir / model["checkpoint_dir"],
            tokenizer_file=repository / "tokenizer" / "1" / tokenizer["tokenizer_file"],
            record=model_dir / "export.json",
        )


def copy_repository(source: Path, target: Path, over_existing: bool = False) -> Path:
    """A copy of the model repository ``source`` without its exported files (to export another model into);
    ``over_existing`` refreshes the configs and adapters of a copy, keeping its exports. Links stay links: a
    variant that is its model's config.pbtxt (encoder/configs/onnxruntime.pbtxt) stays that file in the copy."""
    exported = {p.relative_to(source) for p in ExportedFiles.of(source).paths()}

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory).relative_to(source)
        return {n for n in names if here / n in exported or n == "__pycache__"}

    if over_existing:  # copytree cannot write a link over an existing file
        for link in (p for p in source.rglob("*") if p.is_symlink()):
            (target / link.relative_to(source)).unlink(missing_ok=True)
    return Path(shutil.copytree(source, target, symlinks=True, ignore=ignore, dirs_exist_ok=over_existing))


def clean(repository: Path) -> None:
    """Remove what the export wrote into ``repository``."""
    for path in ExportedFiles.of(repository).paths():
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def is_current(repository: Path, model: str, engine: str = "auto", precision: str | None = None) -> bool:
    """Whether the repository already holds an export of ``model`` (unchanged since) that ``engine`` runs in
    ``precision`` (None: the engine's default)."""
    _, precision = choose(engine, precision)
    record = read_record(repository)
    try:
        files = ExportedFiles.of(repository)
    except OSError:  # not a model repository (yet)
        return False
    if record is None or not (
        files.onnx_file.is_file()
        and files.tokenizer_file.is_file()
        and (files.checkpoint_dir / "config.json").is_file()
    ):
        return False
    name, fingerprint = source_fingerprint(model)
    return record.model_limits is not None and (record.model, record.fingerprint, record.precision) == (
        name,
        fingerprint,
        graph_precision(precision),
    )


HUB_CHECK_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> str | None:
    """Why the Hugging Face hub is out of reach (None when it is not): HF_HUB_OFFLINE is set, or one request to
    it (through the environment's proxies) gets no HTTP answer within HUB_CHECK_TIMEOUT_S, name lookup included."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    answered = []

    def probe() -> None:
        try:
            urllib.request.urlopen(
                urllib.request.Request(hub_endpoint(), method="HEAD"), timeout=HUB_CHECK_TIMEOUT_S
            ).close()
            answered.append(True)
        except urllib.error.HTTPError:  # an HTTP status is an answer
            answered.append(True)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a stuck name lookup is left behind, not waited for
    thread.start()
    thread.join(HUB_CHECK_TIMEOUT_S)
    return None if answered else f"{hub_endpoint()} is not reachable"


def load_checkpoint(model: str):
    """(tokenizer, model) from a local directory or a hub id, with an error that says what to do offline."""
    path = Path(model).expanduser()
    local = path.is_dir()
    if not local and (path.is_absolute() or model.startswith(".") or model.count("/") > 1):
        raise ExportError(f"MODEL={model} is neither an existing directory nor a Hugging Face hub id")
    # an unreachable hub is found out once, here, rather than by each download retrying for half a minute;
    # a checkpoint already in the local Hugging Face cache still loads
    offline = None if local else hub_offline()
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):  # fails fast, without torch
            raise _hub_error(model, f"{offline} and the model is not in the local cache")
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    source = str(path) if local else model

    def loaded(load, **kwargs):
        """``load(source)``, its failures as ``ExportError`` (one line, no traceback); never another checkpoint's
        own code (auto_map): its classes would run in the export and the server."""
        try:
            return load(source, local_files_only=bool(offline), trust_remote_code=False, **kwargs)
        except OSError as error:
            if local:
                raise ExportError(f"{path} is not a question-answering checkpoint: {_first_line(error)}") from error
            raise _hub_error(model, error.__class__.__name__) from error
        except (ValueError, ImportError, RuntimeError, MemoryError) as error:  # what transformers and torch raise
            raise ExportError(f"{model} does not load: {type(error).__name__}: {_first_line(error)}") from error

    config = loaded(AutoConfig.from_pretrained)
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        raise ExportError(f"{model} is a {family} checkpoint; the families served are {', '.join(FAMILIES)}")
    vocab_size = getattr(config, "vocab_size", None)
    if not isinstance(vocab_size, int) or not 0 < vocab_size <= TYPE_BIT:
        raise ExportError(
            f"{model}'s vocab_size is {vocab_size}; the served tokens carry ids below {TYPE_BIT:,} (runtime.tensors)"
        )
    tokenizer = loaded(AutoTokenizer.from_pretrained, use_fast=True)
    # eager attention: the graph traced from it is the one ONNX Runtime's fusions recognise (the SDPA path does
    # not trace); the logits are the same, and checked against the exported graph's
    network = loaded(AutoModelForQuestionAnswering.from_pretrained, attn_implementation="eager").eval()
    if not tokenizer.is_fast:
        raise ExportError(f"{model} has no fast tokenizer; the tokenizer step needs tokenizer.json offsets")
    if tokenizer.padding_side != "right":
        raise ExportError(f"{model}'s tokenizer pads on the {tokenizer.padding_side}; question-first needs right")
    return tokenizer, network


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


def _hub_error(model: str, reason: str) -> ExportError:
    return ExportError(
        f"could not load '{model}' from the Hugging Face hub ({reason}). Without network "
        "access, pass a local checkpoint directory instead (one holding config.json, the weights and the "
        "tokenizer files, e.g. saved with save_pretrained): make serve MODEL=/path/to/checkpoint, or "
        "python -m serving.export --model /path/to/checkpoint. To try the server without the weights: make "
        "checkpoint SIZE=base (a random-weight checkpoint of the real shape, in checkpoints/electra-qa-base), then "
        "make serve MODEL=checkpoints/electra-qa-base"
    )


def export(
    model: str = DEFAULT_MODEL,
    repository: Path = DEFAULT_REPOSITORY,
    tolerance: float = DEFAULT_TOLERANCE,
    optimize: bool = True,
    engine: str = "auto",
    precision: str | None = None,
    onnx: bool = True,
) -> ExportRecord:
    """Export ``model`` into ``repository`` for ``engine`` computing in ``precision`` (``runtime.engines``; None:
    the engine's default); raises ExportError when ONNX and PyTorch disagree.

    The graph takes the model's own inputs (of the three standard ones); ``optimize`` applies ONNX Runtime's
    transformer fusions (attention, skip-LayerNorm, embedding-LayerNorm, bias-GELU) to it offline, so that the
    served graph is the fused one that was checked against PyTorch. openvino (bf16) runs the fp32 graph in its own
    precision. ``precision="int8"`` (opt-in, onnxruntime)
    quantizes the MatMul weights to int8 (dynamic quantization, VNNI kernels): much faster on CPU, but answers
    may differ from the reference; the tolerance check applies to the fp32 graph and the int8 graph's difference
    is only recorded. ``onnx=False`` skips the ONNX graph (and removes an earlier one): the checkpoint, tokenizer
    and record are written as always, which is all the torch engine reads."""
    try:
        chosen, precision = choose(engine, precision)
    except EngineChoiceError as error:
        raise ExportError(str(error)) from None
    if not onnx and chosen.name != "torch":
        raise ExportError(f"engine {chosen.name} runs the ONNX graph: only the torch engine serves without one")
    precision = graph_precision(precision)
    tokenizer, network = load_checkpoint(model)
    repository = Path(repository)
    if not (repository / "encoder" / "config.pbtxt").is_file():
        raise ExportError(f"{repository} is not a model repository (no encoder/config.pbtxt): copy model_repository/")
    files = ExportedFiles.of(repository)
    check_windowing(tokenizer, repository)
    model_dir = files.record.parent
    model_dir.mkdir(parents=True, exist_ok=True)
    files.tokenizer_file.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=model_dir) as scratch:
        if onnx:
            max_abs_diff, served_diff, fused = _export_onnx(
                tokenizer, network, Path(scratch), tolerance, optimize, precision
            )
            os.replace(Path(scratch) / "model.onnx", files.onnx_file)
        else:
            max_abs_diff, served_diff, fused = None, None, {}
            files.onnx_file.unlink(missing_ok=True)  # an earlier export's graph would not match the record
        # the checkpoint itself, for the torch engine (the GPU path): config.json + model.safetensors
        network.save_pretrained(Path(scratch) / "checkpoint", safe_serialization=True)
        shutil.rmtree(files.checkpoint_dir, ignore_errors=True)
        os.replace(Path(scratch) / "checkpoint", files.checkpoint_dir)
    tokenizer.backend_tokenizer.save(str(files.tokenizer_file))

    inputs = graph_input_names(files.onnx_file) if onnx else model_inputs(tokenizer)
    engines, unrunnable = runnable_engines(files, onnx)
    name, fingerprint = source_fingerprint(model)
    record = ExportRecord(
        model=name,
        fingerprint=fingerprint,
        max_abs_diff=max_abs_diff,
        tolerance=tolerance,
        opset=OPSET,
        exported_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        fused_operators=fused,
        precision=precision,
        served_max_abs_diff=served_diff,
        family=network.config.model_type,
        model_inputs=list(inputs),
        engines=engines,
        unrunnable=unrunnable,
        model_limits=model_limits(network.config, inputs),
    )
    files.record.write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record


def _export_onnx(
    tokenizer, network, scratch: Path, tolerance: float, optimize: bool, precision: str
) -> tuple[float, float | None, dict]:
    """``scratch/model.onnx`` from ``network``, checked against its PyTorch logits: (max abs difference, the int8
    graph's when ``precision`` is int8, fused operator counts). The graph takes the model's inputs of the three
    standard ones and gives both logits (the names ONNX Runtime's fusions recognise, fused when ``optimize``; the
    model step unpacks ``tokens`` itself). Its float constants are brought into fp16's range first
    (``fp16_safe_constants``), and the check is made on that graph."""
    import torch

    sample = tokenizer(
        ["Who wrote it?", "When was the bridge that crosses the river finished?"],
        ["It was written by Ada Lovelace in 1843.", "The bridge over the Élan was finished in 1901, after nine years."],
        padding=True,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    names = model_inputs(tokenizer)
    graph_inputs = tuple(sample[name] for name in names)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in (*names, *GRAPH_OUTPUTS)}
    onnx_path = scratch / "model.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter on purpose: its graph is the one ONNX Runtime's BERT fusions recognise (and the
        # result is checked against PyTorch below); its deprecation notice says nothing to act on here
        warnings.simplefilter("ignore", DeprecationWarning)
        # the tracer's notes on values it records as constants (DistilBERT's mask fill): the graph is checked
        # against PyTorch on inputs of other shapes below
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with _scripted_helpers_traced(network):
            torch.onnx.export(
                _LogitsOnly(network, names),
                graph_inputs,
                str(onnx_path),
                input_names=list(names),
                output_names=list(GRAPH_OUTPUTS),
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )
        optimize = optimize and FAMILIES[network.config.model_type].fused
        fused = _fuse_transformer_ops(onnx_path, network.config) if optimize else {}
        expected = [t.numpy() for t in network(**{n: sample[n] for n in names}, return_dict=False)[:2]]
    clamped = fp16_safe_constants(onnx_path)
    if clamped:
        print(f"float constants brought into fp16's range: {clamped}")
    feeds = {n: t.numpy() for n, t in zip(names, graph_inputs)}
    max_abs_diff = _max_abs_diff(onnx_path, feeds, expected)
    print(f"ONNX vs PyTorch logits: max abs difference {max_abs_diff:.3g} (tolerance {tolerance:g})")
    if not max_abs_diff <= tolerance:
        raise ExportError(f"ONNX logits differ from PyTorch by {max_abs_diff:.3g} > tolerance {tolerance:g}")
    served_diff = None
    if precision == "int8":
        served_diff = _quantize_int8(onnx_path, feeds, expected)
        print(f"int8 vs PyTorch logits: max abs difference {served_diff:.3g} (recorded, not checked)")
    return max_abs_diff, served_diff, fused


FP16_MAX = 65504.0  # the largest finite float16


def _float_constants(model):
    """(name, TensorProto) of every float tensor the graph holds as a value: initializers, ``Constant`` values
    and ``ConstantOfShape`` fills, in every subgraph."""
    import onnx

    def graph_constants(graph):
        yield from ((t.name, t) for t in graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR:
                    yield f"{node.name or node.op_type}.{attribute.name}", attribute.t
                elif attribute.type == onnx.AttributeProto.GRAPH:
                    yield from graph_constants(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    for subgraph in attribute.graphs:
                        yield from graph_constants(subgraph)

    for name, tensor in graph_constants(model.graph):
        if tensor.data_type == onnx.TensorProto.FLOAT:
            yield name, tensor


def fp16_unsafe_constants(onnx_file: Path) -> list[tuple[str, float]]:
    """The graph's float constants outside fp16's finite range (name, the value of largest magnitude): an engine
    that lowers the graph to fp16 (TensorRT, ONNX Runtime's fp16 conversion) turns them into infinities, and an
    additive attention mask built as ``(1 - mask) * -3.4e38`` then gives ``0 * -inf = NaN`` for every real
    token."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    unsafe = []
    for name, tensor in _float_constants(model):
        values = numpy_helper.to_array(tensor)
        if values.size and not np.all(np.abs(values) <= FP16_MAX):
            unsafe.append((name, float(values.flat[int(np.argmax(np.abs(values)))])))
    return unsafe


def fp16_safe_constants(onnx_file: Path) -> dict[str, float]:
    """Rewrite ``onnx_file`` with every float constant clipped to fp16's finite range; the constants changed
    (name: the value that was there). The masks transformers builds from ``finfo(float32).min`` become -65504:
    still far below any attention score, so the fp32 logits do not change (the export's check against PyTorch
    runs on the rewritten graph)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    changed = {}
    for name, tensor in _float_constants(model):
        values = numpy_helper.to_array(tensor)
        if values.size and not np.all(np.abs(values) <= FP16_MAX):
            changed[name] = float(values.flat[int(np.argmax(np.abs(values)))])
            clipped = np.clip(values, -FP16_MAX, FP16_MAX).astype(values.dtype)
            tensor.CopyFrom(numpy_helper.from_array(clipped, tensor.name))
    if changed:
        onnx.save(model, str(onnx_file))
    return changed


@contextlib.contextmanager
def _scripted_helpers_traced(network):
    """The model's module-level TorchScript helpers that branch or loop replaced, while the graph is traced, by
    the Python functions they were compiled from: the tracer then records the branch a self-attention encoder
    always takes rather than exporting the script's control flow. DeBERTa-v2's ``build_rpos`` is such a helper:
    an ``If`` on whether keys and queries differ in length (never, in self-attention), whose branches differ in
    rank, which OpenVINO's CPU plugin does not compile. The traced graph is checked against PyTorch like any
    other."""
    import torch

    module = sys.modules[type(network).__module__]
    # torch.jit.script keeps the function it compiled (for torch.compile to inline): where it does not, the helper
    # stays scripted, and an engine that cannot compile its graph says so in export.json's unrunnable
    originals = {
        name: (helper, getattr(helper, "_torchdynamo_inline", None))
        for name, helper in vars(module).items()
        if isinstance(helper, torch.jit.ScriptFunction)
        and any(node.kind() in ("prim::If", "prim::Loop") for node in helper.graph.nodes())
    }
    try:
        for name, (_, original) in originals.items():
            if callable(original):
                setattr(module, name, original)
        yield
    finally:
        for name, (helper, _) in originals.items():
            setattr(module, name, helper)


def check_windowing(tokenizer, repository: Path) -> None:
    """The tokenizer step's windows (its config's ``max_seq_len`` and ``doc_stride``) are the pipeline's for this
    tokenizer (``min(model_max_length, 384)`` and ``min(max_seq_len // 2, 128)``); else ``ExportError`` saying
    what to set."""
    parameters = config_file_parameters(repository / "tokenizer" / "config.pbtxt")
    served = int(parameters["max_seq_len"]), int(parameters["doc_stride"])
    max_seq_len = min(tokenizer.model_max_length, 384)
    pipeline = max_seq_len, min(max_seq_len // 2, 128)
    if served != pipeline:
        raise ExportError(
            f"the pipeline windows this tokenizer (model_max_length {tokenizer.model_max_length}) at max_seq_len "
            f"{pipeline[0]}, doc_stride {pipeline[1]}; the tokenizer config says {served[0]}, {served[1]}: set them "
            f"in {repository / 'tokenizer' / 'config.pbtxt'} for the same answers"
        )


def model_limits(config, inputs: tuple[str, ...]) -> dict:
    """What the model step checks requests against: ids within the vocabulary, token types within the model's
    (None: it takes none, and the tokenizer's types never reach it), windows within the positions the model has
    (RoBERTa's positions start after its padding index: two fewer)."""
    positions = config.max_position_embeddings
    if FAMILIES[config.model_type].positions_after_padding:
        positions -= config.pad_token_id + 1
    return {
        "vocab_size": config.vocab_size,
        "type_vocab_size": config.type_vocab_size if "token_type_ids" in inputs and config.type_vocab_size else None,
        "max_position_embeddings": positions,
    }


def runnable_engines(files: ExportedFiles, onnx: bool) -> tuple[list[str], dict[str, str]]:
    """The embedded server's engines that run this export, and why each other one does not: tried here, so that
    serving it on one that cannot is refused naming the reason rather than failing inside the model step's
    load."""
    no_graph = "it was exported without the ONNX graph (--no-onnx)"
    refusals = {
        "onnxruntime": None if onnx else no_graph,
        "openvino": openvino_refusal(files.onnx_file) if onnx else no_graph,
        "torch": torch_engine_refusal(files.checkpoint_dir),
    }
    return [e for e, why in refusals.items() if why is None], {e: why for e, why in refusals.items() if why}


def openvino_refusal(onnx_file: Path) -> str | None:
    """Why OpenVINO's CPU plugin does not compile the graph (None: it does); it does not take control flow whose
    branches differ in rank, which TorchScript helpers export (``_scripted_helpers_traced``)."""
    try:
        import openvino
    except ImportError:
        return "OpenVINO is not installed where the export ran"
    core = openvino.Core()
    try:
        core.compile_model(core.read_model(str(onnx_file)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except RuntimeError as error:
        why = f"OpenVINO does not compile the graph: {str(error).strip().splitlines()[-1]}"
        print(why)
        return why
    return None


def torch_engine_refusal(checkpoint_dir: Path) -> str | None:
    """Why the torch engine's own encoders (``runtime.encoders``: ELECTRA and its kin, ALBERT; DeBERTa) do not
    compute this checkpoint's logits (None: they do, every family served in its published configurations); the
    others serve on the ONNX graph's engines."""
    from runtime.encoders import UnsupportedCheckpoint, shape_of

    try:
        shape_of(json.loads((checkpoint_dir / "config.json").read_text()))
    except UnsupportedCheckpoint as error:
        why = f"the torch engine's encoder does not reproduce this checkpoint: {error}"
        print(why)
        return why
    return None


def graph_input_names(onnx_file: Path) -> tuple[str, ...]:
    """The exported graph's inputs: the model's (``model_inputs``) but those it never reads, which the tracer
    drops (DeBERTa-v3 is given token types and has none to embed)."""
    import onnx

    names = {i.name for i in onnx.load(str(onnx_file), load_external_data=False).graph.input}
    return tuple(name for name in GRAPH_INPUTS if name in names)


def model_inputs(tokenizer) -> tuple[str, ...]:
    """What the model takes, in ``GRAPH_INPUTS`` order: the inputs the pipeline passes it (the tokenizer's
    ``model_input_names``; RoBERTa and DistilBERT take no token types)."""
    return tuple(name for name in GRAPH_INPUTS if name in tokenizer.model_input_names)


class _LogitsOnly:
    """Wraps the HF model so that the ONNX graph takes exactly ``names`` and gives (start_logits, end_logits)."""

    def __new__(cls, network, names: tuple[str, ...] = GRAPH_INPUTS):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.network = network

            def forward(self, *inputs):
                out = self.network(**dict(zip(names, inputs)), return_dict=False)
                return out[0], out[1]

        return Wrapper().eval()


def _fuse_transformer_ops(onnx_path: Path, config) -> dict:
    """Rewrite ``onnx_path`` with ONNX Runtime's BERT fusions; returns the fused operator counts."""
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(onnx_path),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    optimized.save_model_to_file(str(onnx_path))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def _quantize_int8(onnx_path: Path, feeds: dict, expected: list) -> float:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = onnx_path.with_name("model.int8.onnx")
    quantize_dynamic(
        str(onnx_path),
        str(quantized),
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    os.replace(quantized, onnx_path)
    return _max_abs_diff(onnx_path, feeds, expected)


def _max_abs_diff(onnx_path: Path, feeds: dict, expected: list) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    taken = {i.name for i in session.get_inputs()}  # the tracer drops inputs the model never reads
    got = session.run(list(GRAPH_OUTPUTS), {name: value for name, value in feeds.items() if name in taken})
    return float(max(np.abs(g - e).max() for g, e in zip(got, expected)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local checkpoint directory")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--no-optimize", action="store_true", help="skip ONNX Runtime's transformer fusions")
    parser.add_argument(
        "--engine",
        choices=("auto", *ENGINES),
        default="auto",
        help="the model step that will run the export (runtime.engines; auto: as make serve chooses it)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="what the engine computes in (default: its first); int8: onnxruntime's opt-in quantized graph "
        "(faster on CPU; answers may differ)",
    )
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="no ONNX graph: the checkpoint, tokenizer and record only, all the torch engine reads",
    )
    parser.add_argument("--clean", action="store_true", help="remove the exported files from the repository")
    parser.add_argument(
        "--if-needed", action="store_true", help="do nothing when the repository already holds an export of this model"
    )
    args = parser.parse_args(argv)
    if args.clean:
        clean(args.repository)
        return 0
    if args.if_needed and is_current(args.repository, args.model, args.engine, args.precision):
        print(f"{args.repository} already serves {args.model}")
        return 0
    try:
        record = export(
            args.model,
            args.repository,
            args.tolerance,
            optimize=not args.no_optimize,
            engine=args.engine,
            precision=args.precision,
            onnx=not args.no_onnx,
        )
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 2
    print(f"exported {record.model} into {args.repository} (fused: {record.fused_operators or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
