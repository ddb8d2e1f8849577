"""Undo preprocessing on predicted logits and write label maps with the original geometry.

As in nnU-Net, the logits are resampled to the original spacing and the softmax comes after: linear interpolation
of probabilities, which saturate at 0 and 1, shifts the borders of confident small structures (on the brain-ms
benchmark it cost 0.009 pooled lesion Dice). `export_prediction` reverts one class at a time: each class's logits
are resampled in fp32 on the cropped grid, the labels come from a running argmax there (exactly np.argmax's, ties
to the lower class) and the softmax from a running log-sum-exp; only the probabilities to save are kept at full
resolution, in float16 (as CASE.npz stores them), computed in a second pass. A many-class large case never holds
every class at full resolution in fp32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from xtlunet.dataset.geometry import Geometry, Reorientation
from xtlunet.dataset.io import file_ending, write_image
from xtlunet.errors import XtlunetError
from xtlunet.plans import Plans
from xtlunet.preprocessing.resample import resample_classes
from xtlunet.utils.atomic import atomic_path


def revert_preprocessing(logits: np.ndarray, props: dict[str, Any], plans: Plans) -> np.ndarray:
    """Probabilities (K, *original shape) on the original grid, in the original axis order, of logits
    (K, *preprocessed): the logits resampled to the cropped shape, softmaxed, pasted into the uncropped array
    (background outside the crop box), transposed back, the reorientation (if any) undone."""
    cropped = np.stack(list(_cropped_classes(logits, props, plans)))
    cropped = np.exp(cropped - cropped.max(axis=0, keepdims=True))
    cropped /= cropped.sum(axis=0, keepdims=True)
    return np.stack([revert_channel(c, props, plans, float(k == 0)) for k, c in enumerate(cropped)])


def _cropped_classes(logits: np.ndarray, props: dict[str, Any], plans: Plans) -> Iterator[np.ndarray]:
    """Each class's fp32 logits resampled to the cropped grid, one at a time, once the input is checked."""
    check_same_plans(props, plans)
    if list(logits.shape[1:]) != list(props["shape_after_resample"]):
        raise XtlunetError(f"logits of spatial shape {list(logits.shape[1:])} do not match the preprocessed "
                           f"shape {props['shape_after_resample']}",
                           fix="pass this case's preprocessed-grid prediction (write_prediction takes reverted "
                           "probabilities)")
    return resample_classes(np.asarray(logits, dtype=np.float32), props["shape_after_crop"], props["separate_axis"])


def revert_channel(cropped: np.ndarray, props: dict[str, Any], plans: Plans, fill: float | int) -> np.ndarray:
    """One channel of the cropped grid on the original grid: pasted into the crop box (`fill` outside), transposed
    back, reorientation undone (exact); its dtype is kept."""
    full = np.full(props["shape_before_crop"], fill, dtype=cropped.dtype)
    full[tuple(slice(a, b) for a, b in props["bbox"])] = cropped
    return undo_reorientation(full.transpose(plans.transpose_backward), props, lead=0)


def check_same_plans(props: dict[str, Any], plans: Plans) -> None:
    """Refuse to revert a case with plans that transpose or reorient otherwise than its preprocessing did."""
    if list(props["transpose_forward"]) != list(plans.transpose_forward):
        raise XtlunetError(f"the case was preprocessed with transpose {props['transpose_forward']}, the plans say "
                           f"{plans.transpose_forward}", fix="export with the plans the case was preprocessed with")
    if (props.get("reorientation") is not None) != plans.reorient:
        done = "with" if props.get("reorientation") is not None else "without"
        raise XtlunetError(f"the case was preprocessed {done} reorientation, the plans say reorient={plans.reorient}",
                           fix="export with the plans the case was preprocessed with")


def undo_reorientation(full: np.ndarray, props: dict[str, Any], lead: int = 1) -> np.ndarray:
    """Arrays (`lead` leading axes, *reoriented shape) back in the input's axis order and directions (exact)."""
    record = props.get("reorientation")
    if record is None:
        return np.ascontiguousarray(full)
    return Reorientation.from_json(record).revert(full, lead=lead)


def label_values(plans: Plans, classes: int) -> np.ndarray:
    """The declared label values in class order (uint8 when they fit, else uint16); refused if not `classes`."""
    values = np.array(sorted(set(plans.labels.values())))
    if len(values) != classes:
        raise XtlunetError(f"{classes} probability channels but {len(values)} labels in plans "
                           f"{plans.plans_name}", fix="use the plans the network was trained with")
    return values.astype(np.uint8 if values.max() < 256 else np.uint16)


def probabilities_to_labels(probs: np.ndarray, plans: Plans) -> np.ndarray:
    """Argmax over classes (probabilities or logits), mapped to the declared label values (uint8 when they fit, else
    uint16)."""
    return label_values(plans, probs.shape[0])[np.argmax(probs, axis=0)]


def probabilities_path(out_path: str | Path) -> Path:
    """The .npz beside a label file: CASE.nii.gz → CASE.npz."""
    out_path = Path(out_path)
    ending = file_ending(out_path)
    stem = out_path.name[: -len(ending)] if ending else out_path.name
    return out_path.with_name(f"{stem}.npz")


def _write(labels: np.ndarray, probs16: np.ndarray | None, props: dict[str, Any], out_path: str | Path) -> None:
    """Write the label map (the input's geometry) and, when given, the float16 probabilities to CASE.npz; atomic."""
    write_image(out_path, labels, Geometry.from_json(props["geometry"]))
    if probs16 is not None:
        with atomic_path(probabilities_path(out_path)) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, probabilities=probs16)


def write_prediction(full: np.ndarray, props: dict[str, Any], plans: Plans, out_path: str | Path,
                     save_probabilities: bool = False) -> np.ndarray:
    """Write reverted probabilities (K, *original shape) as a label map on the original grid; returns the labels.

    Files are written atomically; with save_probabilities, a float16 `probabilities` array goes to CASE.npz beside it.
    """
    labels = probabilities_to_labels(full, plans)
    _write(labels, full.astype(np.float16) if save_probabilities else None, props, out_path)
    return labels


def export_prediction(logits: np.ndarray, props: dict[str, Any], plans: Plans, out_path: str | Path,
                      save_probabilities: bool = False) -> np.ndarray:
    """Revert logits (K, *preprocessed) and write labels (and probabilities) as write_prediction does, one class at
    a time (see the module docstring); returns the labels, identical to write_prediction(revert_preprocessing(...))'s."""
    values = label_values(plans, logits.shape[0])
    best = index = total = None
    for k, cls in enumerate(_cropped_classes(logits, props, plans)):
        if best is None:
            best, index, total = cls, np.zeros(cls.shape, dtype=values.dtype), np.ones(cls.shape, dtype=np.float32)
            continue
        better = cls > best   # strict: a tie keeps the lower class, as np.argmax does
        index[better] = k
        top = np.maximum(best, cls)
        total = total * np.exp(best - top) + np.exp(cls - top)   # running sum of exp(logit − max)
        best = top
    labels = revert_channel(values[index], props, plans, values[0])
    saved = None
    if save_probabilities:   # second pass: softmax = exp(logit − max) / total, class by class
        saved = np.empty((len(values), *labels.shape), dtype=np.float16)
        for k, cls in enumerate(_cropped_classes(logits, props, plans)):
            saved[k] = revert_channel((np.exp(cls - best) / total).astype(np.float16), props, plans, float(k == 0))
    _write(labels, saved, props, out_path)
    return labels
