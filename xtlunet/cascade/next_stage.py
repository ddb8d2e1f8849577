"""A previous stage's prediction on the next stage's preprocessed grid: the lowres fold's export, prediction's chain.

Both stages preprocess a case alike up to the resampling (same transpose, reorientation and crop box), so the
lowres logits only need resampling from one grid to the other before the argmax.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xtlunet.cascade import next_stage_folder
from xtlunet.errors import XtlunetError
from xtlunet.inference.export import probabilities_to_labels
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.preprocessing.resample import resample_class_maps
from xtlunet.utils.atomic import atomic_path, read_json

log = logging.getLogger("xtlunet")


def labels_on_grid(logits: np.ndarray, props: dict[str, Any], target: dict[str, Any], plans: Plans) -> np.ndarray:
    """Logits (K, *grid of props) → label map on the grid of `target` (another configuration's properties of
    the same case), uint8 when the labels fit."""
    for key in ("bbox", "shape_after_crop", "transpose_forward"):
        if list(props[key]) != list(target[key]):
            raise XtlunetError(f"case {props['case_id']}: the two cascade stages were preprocessed differently "
                               f"({key} {props[key]} vs {target[key]})",
                               fix="re-run xtlunet plan-and-preprocess, then train both stages again")
    resampled = resample_class_maps(np.asarray(logits, np.float32), target["shape_after_resample"],
                                    target["separate_axis"])
    return probabilities_to_labels(resampled, plans)


def save_labels(path: Path, seg: np.ndarray) -> None:
    """CASE.npz holding `seg`, compressed, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, seg=seg)


@dataclass
class NextStageWriter:
    """Writes a fold's held-out predictions onto the next stage's preprocessed grid (its `CASE.json` properties)."""

    stage: str
    grid_dir: Path
    out_dir: Path
    plans: Plans
    missing: list[str] = field(default_factory=list)

    def __call__(self, logits: np.ndarray, props: dict[str, Any]) -> None:
        """Resample one case's logits (K, *this stage's grid) to the next stage's grid; save its labels."""
        case_id = props["case_id"]
        target = self.grid_dir / f"{case_id}.json"
        if not target.is_file():
            if not self.missing:
                log.warning("warning: %s has no preprocessed array for case %s (%s): its prediction for the next "
                            "stage is not written; run xtlunet plan-and-preprocess for %s", self.stage, case_id,
                            self.grid_dir, self.stage)
            self.missing.append(case_id)
            return
        save_labels(self.out_dir / f"{case_id}.npz", labels_on_grid(logits, props, read_json(target), self.plans))


def next_stage_writer(plans: Plans, conf: ConfigurationPlan, pre_dir: Path, model_dir: Path) -> NextStageWriter | None:
    """The writer of a configuration that has a next stage in these plans (3d_lowres), else None."""
    stage = conf.next_stage
    if stage is None or stage not in plans.configurations:
        return None
    return NextStageWriter(stage, pre_dir / plans.configuration(stage).data_identifier,
                           next_stage_folder(model_dir, stage), plans)
