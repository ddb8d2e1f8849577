"""Training checkpoints and RNG state: written atomically with torch.save, read with weights_only=True only."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from xtlunet.errors import XtlunetError
from xtlunet.utils.atomic import save_torch
from xtlunet.utils.torch_io import safe_torch_load

CHECKPOINT_KIND = "xtlunet-train"
RESUME_ORDER = ("checkpoint_latest.pth", "checkpoint_final.pth")
# what a fold's result depends on beyond its plan and trainer, recorded in every checkpoint as its "recipe"
RECIPE_START = ("pretrained_sha256", "transfer_mode", "seed")          # a fold cannot change these midway
RECIPE_BUDGET = ("epochs", "iters_per_epoch", "val_iters")


def run_recipe(run: Any) -> dict[str, Any]:
    """A run's recipe: the start weights (by content), transfer mode, seed and budget."""
    from xtlunet.transfer.checkpoint import file_digest

    weights = Path(run.pretrained) if run.pretrained else None
    return {"pretrained_sha256": file_digest(weights) if weights is not None and weights.is_file() else None,
            "transfer_mode": run.transfer_mode if weights is not None else None, "seed": run.seed,
            "epochs": run.epochs, "iters_per_epoch": run.iters_per_epoch, "val_iters": run.val_iters}


def recipe_differences(recorded: dict[str, Any], wanted: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """'key recorded → wanted' for each of `keys` on which two recipes differ."""
    return [f"{k} {recorded.get(k)} → {wanted.get(k)}" for k in keys if recorded.get(k) != wanted.get(k)]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temp file, then rename (a full disk is an OSError the CLI explains)."""
    save_torch(path, payload)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (weights_only=True)."""
    obj = safe_torch_load(path)
    if not isinstance(obj, dict):
        raise XtlunetError("checkpoint is not a dictionary", path=path, fix="give an xtlunet training checkpoint")
    return obj


def rng_state() -> dict[str, Any]:
    """Torch, numpy and Python RNG states in a weights_only-loadable form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of rng_state."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))


def check_checkpoint(ck: dict[str, Any], trainer: str, identity: str, path: Any) -> None:
    """Refuse a checkpoint of another kind, trainer or plan."""
    if ck.get("kind") != CHECKPOINT_KIND:
        raise XtlunetError("not an xtlunet training checkpoint", path=path, fix="point at a fold's checkpoint_*.pth")
    if ck.get("plans_identity") != identity:
        raise XtlunetError("checkpoint was trained with a different plan", path=path,
                           fix="use the plans it was trained with, or start the fold again without --continue")
    if ck.get("trainer") != trainer:
        raise XtlunetError(f"checkpoint belongs to trainer {ck.get('trainer')}, not {trainer}", path=path,
                           fix=f"use -tr {ck.get('trainer')}")


def latest_checkpoint(fold_dir: Path) -> Path | None:
    """The checkpoint a fold continues from: checkpoint_latest, else checkpoint_final, else None."""
    return next((fold_dir / n for n in RESUME_ORDER if (fold_dir / n).is_file()), None)


def resume_checkpoint(fold_dir: Path, trainer: str, identity: str,
                      recipe: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """(path, checkpoint) that --continue resumes from: the fold's checkpoint_latest (or _final), checked; with
    `recipe`, other start weights, transfer mode or seed than the checkpoint's are refused."""
    path = latest_checkpoint(fold_dir)
    if path is None:
        raise XtlunetError("--continue: no checkpoint to continue from", path=fold_dir,
                           fix="start the fold without --continue")
    ck = load_checkpoint(path)
    check_checkpoint(ck, trainer, identity, path)
    diffs = recipe_differences(ck["recipe"], recipe, RECIPE_START) if recipe and ck.get("recipe") else []
    if diffs:
        raise XtlunetError(f"--continue: the checkpoint was started with another recipe ({'; '.join(diffs)})",
                           path=path, fix="continue with the --pretrained, --transfer-mode and --seed it was started "
                                           "with, or start the fold again without --continue")
    return path, ck
