"""Helpers of the bad-input catalogue and the fault tests: small dataset copies, corruptions, snapshots, CLI runs."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

BRAIN, PROSTATE, MAMMO = "Dataset501_BrainMS", "Dataset502_Prostate", "Dataset503_Mammo"


class NotAWeight:
    """A custom class: a checkpoint holding an instance of it needs torch.load(weights_only=False)."""

    def __init__(self) -> None:
        self.note = "pickled Python object"


# ---------------------------------------------------------------- environment of one catalogue entry

@dataclass
class Env:
    """The roots, scratch folder and monkeypatch of one catalogue entry."""

    tmp: Path
    raw: Path
    pre: Path
    res: Path
    mp: Any
    cache: Path | None = None
    watch: list[Path] = field(default_factory=list)

    @property
    def inp(self) -> Path:
        """Input folder of predict entries."""
        return self.tmp / "in"

    @property
    def out(self) -> Path:
        """Output folder of predict entries."""
        return self.tmp / "out"

    def fmt(self, argv: list[str]) -> list[str]:
        """argv with {tmp}, {raw}, {pre}, {res}, {in}, {out} filled in."""
        values = {"tmp": self.tmp, "raw": self.raw, "pre": self.pre, "res": self.res, "in": self.inp, "out": self.out}
        return [a.format(**{k: str(v) for k, v in values.items()}) for a in argv]


def set_roots(mp: Any, raw: Path, pre: Path, res: Path) -> None:
    """XTLUNET_* roots (nnUNet_* unset), augmentation in this process."""
    for kind, path in (("raw", raw), ("preprocessed", pre), ("results", res)):
        mp.setenv(f"XTLUNET_{kind}", str(path))
        mp.delenv(f"nnUNet_{kind}", raising=False)
    mp.setenv("XTLUNET_n_proc_DA", "0")


# ---------------------------------------------------------------- snapshots of output folders

def snapshot(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file under the folders: path → (size, mtime_ns)."""
    out = {}
    for folder in folders:
        if folder.exists():
            for p in [folder] if folder.is_file() else folder.rglob("*"):
                if p.is_file():
                    st = p.stat()
                    out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def partial_files(folders: list[Path]) -> list[str]:
    """Temp files of atomic writes (`.NAME.XXXX.partial...`) left under the folders."""
    return [str(p) for f in folders if f.is_dir() for p in f.rglob("*") if ".partial" in p.name]


def error_lines(err: str) -> list[str]:
    """Lines of stderr carrying an error message."""
    return [line for line in err.splitlines() if "error:" in line]


# ---------------------------------------------------------------- small raw dataset copies

def small_copy(cache: Path, name: str, raw: Path, n_cases: int) -> Path:
    """Copy the first n_cases training cases of a cached example into raw (no test split), numTraining fixed."""
    src, dst = cache / name, raw / name
    spec = json.loads((src / "dataset.json").read_text())
    ending = spec["file_ending"]
    ids = sorted({p.name[: -len(ending) - 5] for p in (src / "imagesTr").glob(f"*_0000{ending}")})[:n_cases]
    (dst / "imagesTr").mkdir(parents=True)
    for cid in ids:
        for f in (src / "imagesTr").glob(f"{cid}_*{ending}"):
            shutil.copy(f, dst / "imagesTr" / f.name)
    if (src / "labelsTr").is_dir():
        (dst / "labelsTr").mkdir()
        for cid in ids:
            shutil.copy(src / "labelsTr" / f"{cid}{ending}", dst / "labelsTr" / f"{cid}{ending}")
    if "findings" in spec:
        rows = read_csv(src / spec["findings"])
        write_csv(dst / spec["findings"], [r for r in rows if r["case_id"] in ids], list(rows[0]))
    spec["numTraining"] = len(ids)
    (dst / "dataset.json").write_text(json.dumps(spec, indent=2))
    return dst


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    """Write rows with the given columns."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    """Apply `change` to a JSON file's object in place."""
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj, indent=2))


def rewrite_image(path: Path, change: Callable[[np.ndarray, Any], tuple[np.ndarray, Any]]) -> None:
    """Read an image, let `change` return a new (array, geometry), and write it back in place."""
    from xtlunet.dataset.io import read_image, write_image

    arr, geo = read_image(path, check_finite=False)
    arr, geo = change(arr, geo)
    write_image(path, arr, geo)


def with_geometry(geo: Any, **fields: Any) -> Any:
    """A copy of a Geometry with some fields replaced."""
    from dataclasses import replace

    return replace(geo, **fields)


# ---------------------------------------------------------------- subprocess runs

def cli_env(roots: dict[str, Path], **extra: str) -> dict[str, str]:
    """Environment of a `python -m xtlunet` subprocess on these roots."""
    env = {**os.environ, "XTLUNET_n_proc_DA": "0", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for kind, path in roots.items():
        env[f"XTLUNET_{kind}"] = str(path)
        env.pop(f"nnUNet_{kind}", None)
    env.update(extra)
    return env


def xtlunet_cmd(*argv: str) -> list[str]:
    """The command line of an xtlunet subprocess."""
    return [sys.executable, "-m", "xtlunet", *argv]


def run_cli(roots: dict[str, Path], *argv: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    """Run xtlunet in a subprocess; output captured as text."""
    return subprocess.run(xtlunet_cmd(*argv), env=cli_env(roots, **extra), capture_output=True, text=True,
                          timeout=timeout)
