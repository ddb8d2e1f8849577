"""Data roots from the environment: XTLUNET_raw / _preprocessed / _results (nnUNet_* as fallback)."""
from __future__ import annotations

import os
from pathlib import Path

from xtlunet.errors import XtlunetError

ROOTS = {"raw": "XTLUNET_raw", "preprocessed": "XTLUNET_preprocessed", "results": "XTLUNET_results"}
FALLBACK = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}
NUM_FOLDS = 5  # cross-validation folds of every configuration: fold_0 … fold_{NUM_FOLDS - 1} in a model folder


def _root_setting(kind: str) -> tuple[str, Path] | None:
    """(variable, folder) of the data root `kind` as set in the environment, or None when unset."""
    for var in (ROOTS[kind], FALLBACK[kind]):
        value = os.environ.get(var)
        if value:
            return var, Path(value).expanduser()
    return None


def data_root(kind: str) -> Path:
    """The folder for `kind` ('raw', 'preprocessed' or 'results'), from XTLUNET_* or nnUNet_*; never a file."""
    setting = _root_setting(kind)
    if setting is None:
        raise XtlunetError(f"data root {ROOTS[kind]} is not set",
                           fix=f"export {ROOTS[kind]}=/path/to/{kind} (or {FALLBACK[kind]})")
    var, path = setting
    if path.exists() and not path.is_dir():
        raise XtlunetError(f"{var} is a file, not a folder", path=path, fix=f"point {var} at a folder")
    return path


def root_of(path: str | Path) -> tuple[str, Path] | None:
    """(variable, absolute folder) of the data root that `path` lies in (the innermost when roots nest), or None."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    roots = [(var, Path(os.path.abspath(root))) for var, root in filter(None, map(_root_setting, ROOTS))]
    hits = [(var, root) for var, root in roots if path == root or root in path.parents]
    return max(hits, key=lambda hit: len(str(hit[1])), default=None)


def raw_root() -> Path:
    """The raw-data root."""
    return data_root("raw")


def preprocessed_root() -> Path:
    """The preprocessed-data root."""
    return data_root("preprocessed")


def results_root() -> Path:
    """The results root."""
    return data_root("results")


def model_folder(dataset_name: str, trainer: str, plans_name: str, configuration: str) -> Path:
    """results/DATASET/TRAINER__PLANS__CONFIG: where a trainer's folds of one plan and configuration live."""
    return results_root() / dataset_name / f"{trainer}__{plans_name}__{configuration}"


def model_folders(results: Path, dataset_name: str, configuration: str, trainer: str | None) -> list[Path]:
    """Model folders of a dataset and configuration (optionally of one trainer)."""
    base = results / dataset_name
    pattern = f"{trainer or '*'}__*__{configuration}"
    return sorted(p for p in base.glob(pattern) if p.is_dir()) if base.is_dir() else []
