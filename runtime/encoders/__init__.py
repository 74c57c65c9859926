"""The torch engine's encoders, one per kind of network among the families served: ``electra`` (ELECTRA and its
kin: BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ALBERT) and ``deberta`` (DeBERTa-v2/v3), each in plain torch with
SDPA and held to transformers by the tests. ``read_checkpoint`` reads a checkpoint directory into the shape of
the network that reproduces it and its weights; ``shape_of`` refuses (``UnsupportedCheckpoint``) a
configuration no encoder reproduces."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.encoders.checkpoint import UnsupportedCheckpoint, read_weights
from runtime.encoders.deberta import DebertaShape
from runtime.encoders.electra import ElectraShape

# config.json's model_type -> the shape of the network that reproduces it (every other family: ElectraShape's)
SHAPES = {"deberta-v2": DebertaShape}

__all__ = ["UnsupportedCheckpoint", "read_checkpoint", "shape_of"]


def shape_of(config: dict):
    """The shape of the network that reproduces this ``config.json``; ``UnsupportedCheckpoint`` for any other."""
    return SHAPES.get(config.get("model_type"), ElectraShape).from_config(config)


def read_checkpoint(directory: str | Path):
    """(shape, state dict on CPU) of a Hugging Face question-answering checkpoint directory; ``shape.build(state)``
    is the network."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no config.json (not a Hugging Face checkpoint directory)")
    return shape_of(json.loads(config_file.read_text())), read_weights(directory)
