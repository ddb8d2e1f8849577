"""Ensembles of prediction folders (`xtlunet ensemble`, and the cross-validation ensembles of find-best-configuration):
the mean of the members' CASE.npz probabilities, argmax, written with the geometry of the first member's label file.

Label values are the channel indices (dataset.json's labels are 0..K-1). Every case, member and shape is checked
before the first file is written.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from xtlunet.dataset.io import SUPPORTED_ENDINGS, read_header, write_image
from xtlunet.errors import XtlunetError, plural
from xtlunet.inference.ensemble import average_predictions
from xtlunet.inference.export import probabilities_path
from xtlunet.utils.atomic import atomic_path
from xtlunet.utils.parallel import map_cases

PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class Member:
    """One member's prediction of a case: its probabilities (CASE.npz) and label file (CASE.ext)."""

    npz: Path
    label_file: Path


@dataclass(frozen=True)
class EnsembleJob:
    """One case to ensemble: its members (the first gives the geometry) and the label file to write."""

    case_id: str
    members: tuple[Member, ...]
    target: Path
    save_probabilities: bool = False


def npz_shape(path: Path) -> tuple[int, ...]:
    """The shape of the `probabilities` array of a CASE.npz, from its header (nothing decompressed beyond it)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{PROBABILITIES}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return tuple(int(s) for s in reader(fh)[0])
    except KeyError:
        raise XtlunetError(f"{path.name} holds no '{PROBABILITIES}' array", path=path,
                           fix="use the CASE.npz that predict --save-probabilities writes") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise XtlunetError(f"cannot read {path.name} ({exc})", path=path,
                           fix="predict the case again with --save-probabilities") from None


def label_file_of(npz: Path) -> Path:
    """The label file beside CASE.npz (CASE + any image ending); refused when there is none."""
    stem = npz.name[: -len(".npz")]
    found = [npz.with_name(stem + e) for e in SUPPORTED_ENDINGS if npz.with_name(stem + e).is_file()]
    if not found:
        raise XtlunetError(f"no label file {stem}.* beside {npz.name}", path=npz.parent,
                           fix="ensemble folders written by xtlunet predict --save-probabilities")
    return found[0]


def check_jobs(jobs: Sequence[EnsembleJob]) -> None:
    """Refuse a job whose members' probabilities differ in shape, or do not match the first member's label grid."""
    for job in jobs:
        first = job.members[0]
        shape = npz_shape(first.npz)
        grid = read_header(first.label_file).shape
        if tuple(shape[1:]) != tuple(grid):
            raise XtlunetError(f"probabilities of case {job.case_id} have spatial shape {list(shape[1:])}, its label "
                               f"file {first.label_file.name} {list(grid)}", path=first.npz,
                               fix="predict the case again with --save-probabilities")
        for member in job.members[1:]:
            other = npz_shape(member.npz)
            if other != shape:
                what = "labels (channels)" if other[1:] == shape[1:] else "shape"
                raise XtlunetError(f"case {job.case_id}: {member.npz.name} has {what} {list(other)}, "
                                   f"{first.npz} has {list(shape)}", path=member.npz,
                                   fix="ensemble predictions of one dataset and of the same cases")


def load_probabilities(path: Path) -> np.ndarray:
    """The `probabilities` array of a CASE.npz (float16 as written)."""
    with np.load(path) as data:
        return data[PROBABILITIES]


def save_probabilities(path: Path, probs: np.ndarray) -> None:
    """Write probabilities as predict does: a float16 `probabilities` array in a compressed .npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **{PROBABILITIES: probs.astype(np.float16)})


def ensemble_case(job: EnsembleJob) -> str:
    """Average one case's members, write its label map (and probabilities); returns the case id (runs in a worker)."""
    probs = average_predictions(load_probabilities(m.npz) for m in job.members)
    labels = np.argmax(probs, axis=0).astype(np.uint8 if probs.shape[0] <= 256 else np.uint16)
    write_image(job.target, labels, read_header(job.members[0].label_file))
    if job.save_probabilities:
        save_probabilities(probabilities_path(job.target), probs)
    return job.case_id


def run_jobs(jobs: Sequence[EnsembleJob], num_workers: int = 1, desc: str = "ensemble") -> list[str]:
    """Check every job, then run them with a progress bar; returns the case ids."""
    check_jobs(jobs)
    return map_cases(ensemble_case, jobs, num_workers, desc=desc)


def folder_members(folders: Sequence[Path]) -> dict[str, tuple[Member, ...]]:
    """case → its member in each folder, for every CASE.npz in any folder; a case one folder lacks is refused."""
    if len(folders) < 2:
        raise XtlunetError(f"an ensemble needs two or more prediction folders, got {len(folders)}",
                           fix="give -i DIR1 DIR2 [...]")
    seen: set[Path] = set()
    for folder in folders:
        if not folder.is_dir():
            raise XtlunetError("prediction folder not found", path=folder, fix="check the path given to -i")
        if folder.resolve() in seen:
            raise XtlunetError(f"{folder} is given twice: it would weigh double in the ensemble", path=folder,
                               fix="name each prediction folder once")
        seen.add(folder.resolve())
    npz = {f: {p.name[: -len(".npz")] for p in f.glob("*.npz") if not p.name.startswith(".")} for f in folders}
    cases = sorted(set().union(*npz.values()))
    if not cases:
        raise XtlunetError("no CASE.npz probabilities in the prediction folders", path=folders[0],
                           fix="predict with --save-probabilities")
    for folder, have in npz.items():
        missing = [c for c in cases if c not in have]
        if missing:
            raise XtlunetError(f"{folder} lacks the probabilities of {plural(len(missing), 'case')} the other folders "
                               f"have: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}",
                               path=folder / f"{missing[0]}.npz", fix="predict those cases into it with "
                               "--save-probabilities, or remove them from every folder")
    return {c: tuple(Member(f / f"{c}.npz", label_file_of(f / f"{c}.npz")) for f in folders) for c in cases}


def ensemble_folders(folders: Sequence[Path], out_dir: Path, num_workers: int = 1,
                     save_probs: bool = False) -> list[str]:
    """`xtlunet ensemble`: every case of the folders averaged into out_dir (label files named as the first folder's)."""
    from xtlunet.inference.folder import check_folders
    from xtlunet.utils.lock import folder_lock

    members = folder_members(folders)
    for folder in folders:
        check_folders(folder, out_dir)
    jobs = [EnsembleJob(c, m, out_dir / m[0].label_file.name, save_probs) for c, m in members.items()]
    with folder_lock(out_dir, "ensemble output folder"):  # a refused run leaves no folder behind
        return run_jobs(jobs, num_workers)


def jobs_for(cases: Mapping[str, Sequence[Member]], out_dir: Path, ending: str) -> list[EnsembleJob]:
    """Jobs writing out_dir/CASE{ending} for cases given as case → members."""
    return [EnsembleJob(c, tuple(m), out_dir / f"{c}{ending}") for c, m in sorted(cases.items())]
