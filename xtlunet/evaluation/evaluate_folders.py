"""Evaluate a folder of predicted segmentations against a folder of references (files matched by name)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from xtlunet.dataset.io import read_image
from xtlunet.errors import XtlunetError, plural
from xtlunet.evaluation.segmentation_metrics import evaluate_case
from xtlunet.evaluation.summary import CaseScores, ValidationSummary


def _case_files(ref_dir: Path, pred_dir: Path, file_ending: str) -> tuple[list[Path], list[str]]:
    """Reference files, and the prediction files that have no reference; refuses missing predictions."""
    for folder, role in ((ref_dir, "reference"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise XtlunetError(f"{role} folder not found", path=folder, fix="check the path")
    refs = sorted(p for p in ref_dir.iterdir() if p.is_file() and p.name.endswith(file_ending))
    if not refs:
        raise XtlunetError(f"no reference files ending in '{file_ending}'", path=ref_dir,
                           fix="check the folder and the file ending")
    missing = [p.name[: -len(file_ending)] for p in refs if not (pred_dir / p.name).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise XtlunetError(f"no prediction for {plural(len(missing), 'reference case')}: {shown}", path=pred_dir,
                           fix=f"predict the missing cases into this folder as <case>{file_ending}")
    names = {p.name for p in refs}
    extra = sorted(p.name for p in pred_dir.iterdir() if p.name.endswith(file_ending) and p.name not in names)
    return refs, extra


def _reference_labels(refs: Sequence[Path]) -> list[int]:
    """The nonzero labels found in any reference file."""
    found: set[int] = set()
    for path in refs:
        found.update(int(v) for v in np.unique(read_image(path)[0]))
    return sorted(found - {0})


def _read_pair(ref_path: Path, pred_path: Path, case: str, declared: Mapping[int, str] | None,
               ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Reference and prediction arrays on one grid, and its spacing; refuses a prediction on another grid and,
    with `declared` labels, a file holding undeclared values."""
    ref, ref_geo = read_image(ref_path)
    pred, pred_geo = read_image(pred_path)
    if declared is not None:
        refuse_undeclared(ref_path, ref, declared, "reference")
        refuse_undeclared(pred_path, pred, declared, "prediction")
    diffs = ref_geo.mismatch(pred_geo)
    if diffs:
        raise XtlunetError(f"prediction of case '{case}' is not on the reference grid ({'; '.join(diffs)})",
                           path=pred_path, fix="write the prediction with the reference image's geometry "
                                               "(same shape, spacing, origin and direction)")
    return pred, ref, ref_geo.spacing


def refuse_undeclared(path: Path, array: np.ndarray, declared: Mapping[int, str], role: str) -> None:
    """Refuse a label file holding values that dataset.json does not declare (they would be scored as nothing)."""
    undeclared = np.setdiff1d(np.unique(array), np.asarray(sorted({0, *declared}), dtype=np.float64))
    if undeclared.size:
        values = ", ".join(f"{v:g}" for v in undeclared[:10]) + (" ..." if undeclared.size > 10 else "")
        listed = ", ".join(f"{v} {n}" for v, n in sorted(declared.items()))
        raise XtlunetError(f"{role} {path.name} holds label values {values} that dataset.json does not declare",
                           path=path, fix=f"the declared labels are {listed}: relabel the file, or evaluate with "
                                          "the dataset it belongs to (-d), or omit -d to score the references' labels")


def evaluate_segmentation_folders(ref_dir: str | Path, pred_dir: str | Path, labels: Sequence[int] | None = None,
                                  file_ending: str = ".nii.gz", *, declared: Mapping[int, str] | None = None,
                                  min_overlap: float = 0.0, min_lesion_voxels: int = 1,
                                  connectivity: int | None = None) -> tuple[list[dict[str, Any]], ValidationSummary]:
    """(one row per case and label, the ValidationSummary) of every reference case; labels=None reads them twice.

    `declared` ({value: name}, background included, as dataset.json's "labels") refuses any file holding another value.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    refs, extra = _case_files(ref_dir, pred_dir, file_ending)
    labels = _reference_labels(refs) if labels is None else [int(v) for v in labels]
    cases: list[CaseScores] = []
    for ref_path in refs:
        case = ref_path.name[: -len(file_ending)]
        pred, ref, spacing = _read_pair(ref_path, pred_dir / ref_path.name, case, declared)
        cases.append(CaseScores(case, evaluate_case(pred, ref, spacing, labels, min_overlap=min_overlap,
                                                    min_lesion_voxels=min_lesion_voxels, connectivity=connectivity)))
    rows = [{"case_id": c.case_id, "label": lab, **values} for c in cases for lab, values in c.metrics.items()]
    summary = ValidationSummary(task="segmentation", labels=labels, cases=cases, extra_predictions=extra,
                                source={"reference": str(ref_dir), "predictions": str(pred_dir)})
    return rows, summary
