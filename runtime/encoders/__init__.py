"""The torch engine's encoders, one per kind of network among the families served: ``bert_like`` (BERT and its
kin: ELECTRA, DistilBERT, RoBERTa, XLM-RoBERTa, ALBERT) and ``deberta`` (DeBERTa-v2/v3), each in plain torch with
SDPA and held to transformers by the tests. ``read_checkpoint`` reads a checkpoint directory into the shape of
the network that reproduces it and its weights; ``shape_of`` refuses (``UnsupportedCheckpoint``) a
configuration no encoder reproduces."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.encoders.bert_like import BertLikeShape
from runtime.encoders.checkpoint import UnsupportedCheckpoint, read_weights
from runtime.encoders.deberta import DebertaShape
from runtime.families import FAMILIES

# each encoder's shape, by the kind the families declare (runtime.families)
SHAPES = {"bert-like": BertLikeShape, "deberta": DebertaShape}

__all__ = ["UnsupportedCheckpoint", "read_checkpoint", "shape_of"]


def shape_of(config: dict):
    """The shape of the network that reproduces this ``config.json``; ``UnsupportedCheckpoint`` for any other."""
    family = FAMILIES.get(config.get("model_type"))
    if family is None or family.encoder is None:
        reproduced = [name for name, family in FAMILIES.items() if family.encoder]
        raise UnsupportedCheckpoint(f"model_type is {config.get('model_type')!r}, not one of {', '.join(reproduced)}")
    return SHAPES[family.encoder].from_config(config)


def read_checkpoint(directory: str | Path):
    """(shape, state dict on CPU) of a Hugging Face question-answering checkpoint directory; ``shape.build(state)``
    is the network."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no config.json (not a Hugging Face checkpoint directory)")
    return shape_of(json.loads(config_file.read_text())), read_weights(directory)
