"""cv_summary.json: the folds' validation results pooled over the folds that have finished."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xtlunet.training.metrics import auc
from xtlunet.utils.atomic import read_json, write_json


def write_cv_summary(model_dir: Path) -> dict[str, Any]:
    """Pool every fold_K/validation/summary.json under model_dir into model_dir/cv_summary.json."""
    folds = sorted(p for p in model_dir.glob("fold_[0-9]*/validation/summary.json"))
    summaries = [read_json(p) for p in folds]
    out: dict[str, Any] = {"folds": [p.parent.parent.name for p in folds]}
    if summaries and "findings" in summaries[0]:
        rows = [r for s in summaries for r in s["findings"]]
        labels = np.array([r["label"] for r in rows])
        keys = sorted(k for k in rows[0] if k.startswith("p") and k[1:].isdigit()) if rows else []
        probs = np.array([[r[k] for k in keys] for r in rows]) if rows else np.zeros((0, 2))
        out.update(pooled_auc=auc(labels, probs) if len(rows) else float("nan"), n_findings=len(rows),
                   fold_auc=[s.get("auc") for s in summaries])
    elif summaries:
        per_case = [c for s in summaries for c in s.get("cases", [])]
        dices = [s.get("mean_dice_foreground", float("nan")) for s in summaries]
        classes = sorted({k for s in summaries for k in s.get("mean_dice", {})})
        out.update(n_cases=len(per_case), fold_mean_dice=dices,
                   mean_dice={k: _mean([s["mean_dice"].get(k, float("nan")) for s in summaries]) for k in classes},
                   mean_dice_foreground=_mean(dices), cases=per_case)
    write_json(model_dir / "cv_summary.json", out)
    return out


def _mean(values: list[float]) -> float:
    """Mean ignoring NaN (NaN when nothing is left)."""
    v = [x for x in values if x is not None and not np.isnan(x)]
    return float(np.mean(v)) if v else float("nan")
