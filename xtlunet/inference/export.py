"""Undo preprocessing on predicted probabilities and write label maps with the original geometry."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xtlunet.dataset.geometry import Geometry, Reorientation
from xtlunet.dataset.io import file_ending, write_image
from xtlunet.errors import XtlunetError
from xtlunet.plans import Plans
from xtlunet.preprocessing.resample import resample_probabilities
from xtlunet.utils.atomic import atomic_path


def revert_preprocessing(probs: np.ndarray, props: dict[str, Any], plans: Plans) -> np.ndarray:
    """Probabilities (K, *preprocessed) back on the original grid (K, *original shape), in the original axis order.

    Resample to the cropped shape, paste into the uncropped array (background outside the crop box), transpose back,
    undo the reorientation (if any): each step exact except the resampling.
    """
    probs = np.asarray(probs, dtype=np.float32)
    check_same_plans(props, plans)
    if list(probs.shape[1:]) != list(props["shape_after_resample"]):
        raise XtlunetError(f"probabilities of spatial shape {list(probs.shape[1:])} do not match the preprocessed "
                           f"shape {props['shape_after_resample']}",
                           fix="pass this case's preprocessed-grid prediction (write_prediction takes reverted ones)")
    cropped = resample_probabilities(probs, props["shape_after_crop"], props["separate_axis"])
    full = np.zeros((probs.shape[0], *props["shape_before_crop"]), dtype=np.float32)
    full[0] = 1.0
    full[(slice(None), *(slice(a, b) for a, b in props["bbox"]))] = cropped
    return undo_reorientation(full.transpose([0, *(a + 1 for a in plans.transpose_backward)]), props)


def check_same_plans(props: dict[str, Any], plans: Plans) -> None:
    """Refuse to revert a case with plans that transpose or reorient otherwise than its preprocessing did."""
    if list(props["transpose_forward"]) != list(plans.transpose_forward):
        raise XtlunetError(f"the case was preprocessed with transpose {props['transpose_forward']}, the plans say "
                           f"{plans.transpose_forward}", fix="export with the plans the case was preprocessed with")
    if (props.get("reorientation") is not None) != plans.reorient:
        done = "with" if props.get("reorientation") is not None else "without"
        raise XtlunetError(f"the case was preprocessed {done} reorientation, the plans say reorient={plans.reorient}",
                           fix="export with the plans the case was preprocessed with")


def undo_reorientation(full: np.ndarray, props: dict[str, Any]) -> np.ndarray:
    """Arrays (K, *reoriented shape) back in the input's axis order and directions (exact), as recorded in props."""
    record = props.get("reorientation")
    if record is None:
        return np.ascontiguousarray(full)
    return Reorientation.from_json(record).revert(full, lead=1)


def probabilities_to_labels(probs: np.ndarray, plans: Plans) -> np.ndarray:
    """Argmax over classes, mapped to the declared label values (uint8 when they fit, else uint16)."""
    values = np.array(sorted(set(plans.labels.values())))
    if len(values) != probs.shape[0]:
        raise XtlunetError(f"{probs.shape[0]} probability channels but {len(values)} labels in plans "
                           f"{plans.plans_name}", fix="use the plans the network was trained with")
    dtype = np.uint8 if values.max() < 256 else np.uint16
    return values.astype(dtype)[np.argmax(probs, axis=0)]


def probabilities_path(out_path: str | Path) -> Path:
    """The .npz beside a label file: CASE.nii.gz → CASE.npz."""
    out_path = Path(out_path)
    ending = file_ending(out_path)
    stem = out_path.name[: -len(ending)] if ending else out_path.name
    return out_path.with_name(f"{stem}.npz")


def write_prediction(full: np.ndarray, props: dict[str, Any], plans: Plans, out_path: str | Path,
                     save_probabilities: bool = False) -> np.ndarray:
    """Write reverted probabilities (K, *original shape) as a label map on the original grid; returns the labels.

    Files are written atomically; with save_probabilities, a float16 `probabilities` array goes to CASE.npz beside it.
    """
    labels = probabilities_to_labels(full, plans)
    write_image(out_path, labels, Geometry.from_json(props["geometry"]))
    if save_probabilities:
        with atomic_path(probabilities_path(out_path)) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, probabilities=full.astype(np.float16))
    return labels


def export_prediction(probs: np.ndarray, props: dict[str, Any], plans: Plans, out_path: str | Path,
                      save_probabilities: bool = False) -> np.ndarray:
    """Revert probabilities (K, *preprocessed) and write them as write_prediction does; returns the labels."""
    return write_prediction(revert_preprocessing(probs, props, plans), props, plans, out_path, save_probabilities)
