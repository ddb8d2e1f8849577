"""Shared plumbing of the example datasets: registry entry, seeding, progress, dataset.json, findings.csv."""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
from xtlunet.utils.console import progress_bar

from xtlunet.dataset.findings import COLUMNS
from xtlunet.utils.atomic import write_json, write_text
from xtlunet.utils.lock import process_running

T = TypeVar("T")


@dataclass(frozen=True)
class Example:
    """A built-in example dataset: CLI name, folder name, default size and the function that writes it; an example
    with a labelled test set (imagesTs/labelsTs) states its default size, and its `build` takes `test_cases=`."""

    name: str
    folder: str
    default_cases: int
    summary: str
    build: Callable[..., None]
    default_test_cases: int = 0


def case_rng(seed: int, code: int, index: int) -> np.random.Generator:
    """The random generator of one case (or patient): independent of how many cases are written."""
    return np.random.default_rng([int(seed), int(code), int(index)])


def progress(items: Sequence[T], desc: str) -> Iterator[T]:
    """A tqdm bar over cases (on stderr, removed when done)."""
    return iter(progress_bar(items, desc=desc, unit="case", leave=False))


def replace_folder(final: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling, then swap it in for `final`; no half-written folder remains (one a
    killed run left is removed by the next)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_builds(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent))
    old: Path | None = None
    try:
        build(tmp)
        if final.exists():
            old = tmp.with_suffix(".old")
            final.rename(old)
        tmp.rename(final)
    except BaseException:
        if old is not None and not final.exists():
            old.rename(final)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_abandoned_builds(final: Path) -> list[Path]:
    """Remove the temporary siblings of `final` (.NAME.PID.XXXX.partial and its .old) whose process is gone."""
    removed = []
    for sibling in final.parent.glob(f".{final.name}.*.partial*"):
        pid = sibling.name[len(final.name) + 2:].split(".", 1)[0]
        if sibling.is_dir() and pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


def write_dataset_json(root: Path, name: str, description: str, channels: Sequence[str], labels: dict[str, int],
                       num_training: int, file_ending: str, **extra: Any) -> None:
    """Write dataset.json in nnU-Net v2 form (plus the classification keys passed in `extra`)."""
    d: dict[str, Any] = {
        "name": name,
        "description": f"{description} Synthetic data written by xtlunet (xtlunet example); not patient data.",
        "reference": "synthetic",
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": file_ending,
    }
    d.update(extra)
    write_json(root / "dataset.json", d)


def write_findings(root: Path, rows: Iterable[dict[str, Any]], name: str = "findings.csv") -> None:
    """Write findings.csv (case_id, finding_id, patient_id, x, y, z, label); positions rounded to 0.001 mm."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = dict(row)
        for axis in ("x", "y", "z"):
            v = out.get(axis)
            out[axis] = "" if v is None or v == "" else f"{float(v):.3f}"
        writer.writerow(out)
    write_text(root / name, buf.getvalue())


def make_folders(root: Path, *names: str) -> list[Path]:
    """Create sub-folders of `root`; return their paths."""
    paths = [root / n for n in names]
    for p in paths:
        p.mkdir(parents=True, exist_ok=True)
    return paths
