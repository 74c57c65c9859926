"""Stacking ragged batches: arrays of different widths (axis 1) one after the other, right-padded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stack_padded(arrays: Sequence[np.ndarray], fill, width: int | None = None) -> np.ndarray:
    """``arrays`` ([rows_i, width_i, ...], same dtype and trailing shape) concatenated along axis 0 and
    right-padded with ``fill`` to ``width`` (default: the widest)."""
    if len(arrays) == 1 and (width is None or arrays[0].shape[1] == width):
        return arrays[0]
    width = max(a.shape[1] for a in arrays) if width is None else width
    out = np.full((sum(len(a) for a in arrays), width, *arrays[0].shape[2:]), fill, dtype=arrays[0].dtype)
    row = 0
    for a in arrays:
        out[row : row + len(a), : a.shape[1]] = a
        row += len(a)
    return out
