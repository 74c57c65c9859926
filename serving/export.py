"""Export a Hugging Face ELECTRA QA checkpoint into the Triton model repository.

    python -m serving.export --model valhalla/electra-base-discriminator-finetuned_squadv1
    python -m serving.export --model /path/to/checkpoint --repository model_repository

Writes ``electra/1/model.onnx`` (dynamic batch and sequence axes, checked against the PyTorch logits),
``tokenizer/1/tokenizer.json`` (the fast tokenizer the tokenizer step loads) and ``electra/1/export.json``
(what was exported, and how close ONNX came to PyTorch). The server itself never downloads anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_MODEL = "valhalla/electra-base-discriminator-finetuned_squadv1"
DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("start_logits", "end_logits")
OPSET = 17
DEFAULT_TOLERANCE = 1e-3  # max |ONNX - PyTorch| over the check inputs' logits


class ExportError(RuntimeError):
    """The checkpoint could not be loaded or its export does not match PyTorch."""


@dataclass(frozen=True)
class ExportRecord:
    """``electra/1/export.json``: which checkpoint the repository serves."""

    model: str
    fingerprint: str
    max_abs_diff: float
    tolerance: float
    opset: int
    exported_at: str


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
        return ExportRecord(**json.loads((repository / "electra" / "1" / "export.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def is_current(repository: Path, model: str) -> bool:
    """Whether the repository already holds an export of ``model`` (unchanged since)."""
    record = read_record(repository)
    onnx_file = repository / "electra" / "1" / "model.onnx"
    tokenizer_file = repository / "tokenizer" / "1" / "tokenizer.json"
    if record is None or not onnx_file.is_file() or not tokenizer_file.is_file():
        return False
    name, fingerprint = source_fingerprint(model)
    return (record.model, record.fingerprint) == (name, fingerprint)


def load_checkpoint(model: str):
    """(tokenizer, model) from a local directory or a hub id, with an error that says what to do offline."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    path = Path(model).expanduser()
    local = path.is_dir()
    if not local and (path.is_absolute() or model.startswith(".") or model.count("/") > 1):
        raise ExportError(f"MODEL={model} is neither an existing directory nor a Hugging Face hub id")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if local else model, use_fast=True)
        network = AutoModelForQuestionAnswering.from_pretrained(str(path) if local else model).eval()
    except OSError as error:
        if local:
            raise ExportError(f"{path} is not a question-answering checkpoint: {error}") from error
        raise ExportError(
            f"could not load '{model}' from the Hugging Face hub ({error.__class__.__name__}). Without network "
            "access, pass a local checkpoint directory instead (one holding config.json, the weights and the "
            "tokenizer files, e.g. saved with save_pretrained): make serve MODEL=/path/to/checkpoint, or "
            "python -m serving.export --model /path/to/checkpoint"
        ) from error
    if not tokenizer.is_fast:
        raise ExportError(f"{model} has no fast tokenizer; the tokenizer step needs tokenizer.json offsets")
    if tokenizer.padding_side != "right":
        raise ExportError(f"{model}'s tokenizer pads on the {tokenizer.padding_side}; question-first needs right")
    return tokenizer, network


def export(model: str = DEFAULT_MODEL, repository: Path = DEFAULT_REPOSITORY,
           tolerance: float = DEFAULT_TOLERANCE) -> ExportRecord:
    """Export ``model`` into ``repository``; raises ExportError when ONNX and PyTorch disagree."""
    import torch

    tokenizer, network = load_checkpoint(model)
    repository = Path(repository)
    model_dir, tokenizer_dir = repository / "electra" / "1", repository / "tokenizer" / "1"
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)

    sample = tokenizer(
        ["Who wrote it?", "When was the bridge that crosses the river finished?"],
        ["It was written by Ada Lovelace in 1843.", "The bridge over the Élan was finished in 1901, after nine years."],
        padding=True, return_tensors="pt", return_token_type_ids=True,
    )
    inputs = tuple(sample[name] for name in INPUT_NAMES)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES + OUTPUT_NAMES}
    with tempfile.TemporaryDirectory(dir=model_dir) as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                _LogitsOnly(network), inputs, str(onnx_path), input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
            )
            expected = [t.numpy() for t in network(**dict(zip(INPUT_NAMES, inputs)), return_dict=False)[:2]]
        max_abs_diff = _max_abs_diff(onnx_path, {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)}, expected)
        print(f"ONNX vs PyTorch logits: max abs difference {max_abs_diff:.3g} (tolerance {tolerance:g})")
        if not max_abs_diff <= tolerance:
            raise ExportError(f"ONNX logits differ from PyTorch by {max_abs_diff:.3g} > tolerance {tolerance:g}")
        os.replace(onnx_path, model_dir / "model.onnx")
    tokenizer.backend_tokenizer.save(str(tokenizer_dir / "tokenizer.json"))

    name, fingerprint = source_fingerprint(model)
    record = ExportRecord(model=name, fingerprint=fingerprint, max_abs_diff=max_abs_diff, tolerance=tolerance,
                          opset=OPSET, exported_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    (model_dir / "export.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record


class _LogitsOnly:
    """Wraps the HF model so that the ONNX graph has exactly (start_logits, end_logits) as outputs."""

    def __new__(cls, network):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.network = network

            def forward(self, input_ids, attention_mask, token_type_ids):
                out = self.network(input_ids=input_ids, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids, return_dict=False)
                return out[0], out[1]

        return Wrapper().eval()


def _max_abs_diff(onnx_path: Path, feeds: dict, expected: list) -> float:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), feeds)
    return float(max(np.abs(g - e).max() for g, e in zip(got, expected)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local checkpoint directory")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--if-needed", action="store_true", help="do nothing when the repository already holds "
                        "an export of this model")
    args = parser.parse_args(argv)
    if args.if_needed and is_current(args.repository, args.model):
        print(f"{args.repository} already serves {args.model}")
        return 0
    try:
        record = export(args.model, args.repository, args.tolerance)
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 2
    print(f"exported {record.model} into {args.repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
