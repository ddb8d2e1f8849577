"""Data roots from the environment: XTLUNET_raw / _preprocessed / _results (nnUNet_* as fallback)."""
from __future__ import annotations

import os
from pathlib import Path

from xtlunet.errors import XtlunetError

ROOTS = {"raw": "XTLUNET_raw", "preprocessed": "XTLUNET_preprocessed", "results": "XTLUNET_results"}
FALLBACK = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}


def data_root(kind: str) -> Path:
    """The folder for `kind` ('raw', 'preprocessed' or 'results'), from XTLUNET_* or nnUNet_*."""
    for var in (ROOTS[kind], FALLBACK[kind]):
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser()
    raise XtlunetError(f"data root {ROOTS[kind]} is not set",
                       fix=f"export {ROOTS[kind]}=/path/to/{kind} (or {FALLBACK[kind]})")


def raw_root() -> Path:
    """The raw-data root."""
    return data_root("raw")


def preprocessed_root() -> Path:
    """The preprocessed-data root."""
    return data_root("preprocessed")


def results_root() -> Path:
    """The results root."""
    return data_root("results")
