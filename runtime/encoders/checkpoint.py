"""What the torch engine's encoders share about a Hugging Face checkpoint: its weights read from its directory
(``config.json`` with ``model.safetensors`` or ``pytorch_model.bin``), taken tensor by tensor under their names,
and a network built from them strictly (every tensor used, none missing, each of the shape ``config.json``
implies)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn


class UnsupportedCheckpoint(ValueError):
    """The checkpoint is not a question-answering model the encoders reproduce exactly (``runtime.families``)."""


class CheckpointTensors:
    """A checkpoint's state dict, taken tensor by tensor under its Hugging Face names: taking one it lacks, or
    leaving one untaken (but the ``ignored``, which transformers does not read either), is
    ``UnsupportedCheckpoint``."""

    def __init__(self, state: dict[str, torch.Tensor], ignored: Iterable[str] = ()):
        skipped = set(ignored)
        self.remaining = {name: tensor for name, tensor in state.items() if name not in skipped}

    def take(self, name: str) -> torch.Tensor:
        try:
            return self.remaining.pop(name)
        except KeyError:
            raise UnsupportedCheckpoint(f"the checkpoint has no tensor {name}") from None

    def check_all_taken(self) -> None:
        if self.remaining:
            raise UnsupportedCheckpoint(
                f"the checkpoint has tensors this network does not use: {sorted(self.remaining)}"
            )


Network = TypeVar("Network", bound=nn.Module)


def built_strictly(network: Callable[[Any], Network], shape, state: dict[str, torch.Tensor], renamed) -> Network:
    """``network(shape)`` (on CPU, in the weights' dtype, for inference) with the weights ``renamed(state,
    model)`` gives under its own names, strictly: ``UnsupportedCheckpoint`` when a tensor is missing, has a shape
    that config.json does not imply, or is left unused."""
    with torch.device("meta"):  # no random initialisation of weights that are overwritten anyway
        model = network(shape)
    try:
        model.load_state_dict(renamed(state, model), strict=True, assign=True)
    except RuntimeError as error:  # size mismatch
        raise UnsupportedCheckpoint(f"the checkpoint does not fit config.json: {error}") from None
    return model.eval().requires_grad_(False)


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, on CPU."""
    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(directory / "model.safetensors"), device="cpu")
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"{directory} has neither model.safetensors nor pytorch_model.bin (sharded checkpoints are not supported)"
    )
