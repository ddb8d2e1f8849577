"""One-hot channels of a previous stage's label map, and a case's input with them appended (read lazily)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def one_hot(seg: np.ndarray, labels: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
    """(len(labels), *seg.shape): channel i is 1 where seg == labels[i], else 0 (background and −1: no channel)."""
    seg = np.asarray(seg)
    out = np.zeros((len(labels), *seg.shape), dtype=dtype)
    for i, label in enumerate(labels):
        out[i][seg == label] = 1
    return out


def previous_stage_to_data(batch: dict[str, Any], labels: Sequence[int]) -> dict[str, Any]:
    """Move seg channel 1 (the previous stage's labels) into one-hot data channels after the images'; seg keeps
    channel 0 (nnU-Net's MoveSegAsOneHotToData)."""
    seg = batch["seg"]
    hot = np.stack([one_hot(s[1], labels, batch["data"].dtype) for s in seg])
    batch["data"] = np.concatenate([batch["data"], hot], axis=1)
    batch["seg"] = seg[:, :1]
    return batch


class StackedInput:
    """A case's image channels (C, *spatial) and the one-hot channels of its previous-stage label map, concatenated
    only when read (np.asarray), so validating a fold holds one case in memory at a time."""

    def __init__(self, data: np.ndarray, previous: np.ndarray, labels: Sequence[int]) -> None:
        self.data, self.previous, self.labels = data, previous, list(labels)

    @property
    def shape(self) -> tuple[int, ...]:
        """(C + len(labels), *spatial)."""
        return (self.data.shape[0] + len(self.labels), *self.data.shape[1:])

    @property
    def ndim(self) -> int:
        """Number of axes, channels included."""
        return self.data.ndim

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The concatenated float32 array."""
        out = np.concatenate([np.asarray(self.data, np.float32), one_hot(self.previous, self.labels)])
        return out if dtype is None else out.astype(dtype, copy=False)
