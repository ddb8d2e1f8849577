"""Ensembling: the mean of per-fold logits (sliding window) or of per-model probabilities (CASE.npz)."""
from __future__ import annotations

from typing import Iterable, Sequence, TypeVar

import numpy as np
import torch

from xtlunet.errors import XtlunetError

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def average_predictions(predictions: Iterable[Array]) -> Array:
    """Mean of same-shaped prediction arrays (logits or probabilities; numpy or torch, float32), summed one at a
    time to save memory.

    A list or tuple holding one array object twice is refused: that array would weigh double in the mean.
    """
    if isinstance(predictions, (list, tuple)):
        check_distinct(predictions, "prediction")
    total, count = None, 0
    for pred in predictions:
        pred = _float32_like(pred, total)
        if total is None:
            total = pred.clone() if isinstance(pred, torch.Tensor) else pred.copy()
        elif tuple(pred.shape) != tuple(total.shape):
            raise XtlunetError(f"cannot average predictions of shapes {tuple(total.shape)} and {tuple(pred.shape)}",
                               fix="ensemble only predictions of the same case and configuration")
        else:
            total += pred
        count += 1
    if total is None:
        raise XtlunetError("no predictions to average", fix="pass at least one fold's prediction")
    return total / count


def check_distinct(members: Sequence[object], kind: str) -> None:
    """Refuse an ensemble given one object (a fold's network or prediction) twice: it would weigh double."""
    first: dict[int, int] = {}
    for i, member in enumerate(members):
        if id(member) in first:
            raise XtlunetError(f"{kind}s {first[id(member)]} and {i} of the ensemble are one and the same object: it "
                               "would weigh double in the average", fix=f"pass each fold's {kind} once")
        first[id(member)] = i


def _float32_like(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor | None) -> np.ndarray | torch.Tensor:
    """`pred` as float32, of the same kind (and device) as `ref` when one is given."""
    if isinstance(ref, torch.Tensor) or (ref is None and isinstance(pred, torch.Tensor)):
        device = ref.device if isinstance(ref, torch.Tensor) else None
        return torch.as_tensor(pred).to(device=device, dtype=torch.float32)
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    return np.asarray(pred, dtype=np.float32)
