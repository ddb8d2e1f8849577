"""Dataset integrity check: every problem of a raw dataset at once, each naming its file and a fix.

`deep=False` reads image headers only (layout, dimension, geometry, the spacing as stored, the data size a header
claims against the file's size — a truncated or lying file —, findings positions); `deep=True` also reads the voxels
(corrupt compressed data, NaN/Inf, label values). Per-file checks live in `integrity_files`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from xtlunet.dataset.findings import Finding, case_patients, position_problem, read_findings
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.integrity_files import (ImageHeader, Problem, component_problems, dimension_problems,
                                             finite_problems, header_problems, inspect_header, label_value_problems,
                                             non_finite_problem, read_pixels, scan_nifti)
from xtlunet.dataset.io import is_nifti
from xtlunet.dataset.spec import Case, DatasetSpec, channel_of, name_problem
from xtlunet.errors import XtlunetError, plural
from xtlunet.utils.parallel import map_cases

__all__ = ["Problem", "check_dataset", "verify_dataset", "dataset_dimension"]


@dataclass(frozen=True)
class _CaseJob:
    """What a worker needs to check one case (picklable)."""

    case: Case
    ndim: int | None
    decided_by: str
    deep: bool
    same_grid: bool
    label_values: tuple[int, ...]


@dataclass
class _CaseResult:
    """Problems of one case and its channel-0 geometry (None when unreadable)."""

    case_id: str
    geometry: Geometry | None
    problems: list[Problem]


def check_dataset(spec: DatasetSpec, deep: bool = True, num_workers: int = 1) -> list[Problem]:
    """Every problem of a raw dataset (layout, files, geometry, labels, findings); empty when it is sound."""
    train, test = _list_cases(spec, "Tr"), _list_cases(spec, "Ts")
    problems = layout_problems(spec, train, test)
    decided = _decide_dimension(train or [])
    ndim, decided_by = decided if decided else (None, "")
    jobs = [_CaseJob(c, ndim, decided_by, deep, not spec.is_classification, tuple(spec.label_values()))
            for c in (train or []) + test]
    results = map_cases(check_case, jobs, num_workers, desc="checking cases", start_method="spawn", leave=True)
    for result in results:
        problems += result.problems
    if spec.is_classification:
        known = {r.case_id: r.geometry for r in results[:len(train)]} if train else None
        problems += findings_problems(spec, known)
    return problems


def verify_dataset(spec: DatasetSpec, deep: bool = True, num_workers: int = 1) -> None:
    """Raise one XtlunetError listing every problem (in `details`) if the dataset has any."""
    problems = check_dataset(spec, deep=deep, num_workers=num_workers)
    if problems:
        raise XtlunetError(f"dataset check found {plural(len(problems), 'problem')} in {spec.name}", path=spec.root,
                           fix="fix the files listed above, then re-run", details=[p.line() for p in problems])


def dataset_dimension(spec: DatasetSpec) -> int:
    """2 or 3, decided from the first case's channel 0 (the first readable 2D/3D one) in imagesTr."""
    decided = _decide_dimension(_list_cases(spec, "Tr") or [])
    if decided is None:
        raise XtlunetError("cannot tell whether the dataset is 2D or 3D: imagesTr has no readable 2D/3D "
                           "channel-0 image", path=spec.root / "imagesTr",
                           fix="run plan-and-preprocess with --verify to list the broken files")
    return decided[0]


# ---------------------------------------------------------------- layout (file names, counts, folders)

def layout_problems(spec: DatasetSpec, train: list[Case] | None, test: list[Case]) -> list[Problem]:
    """Folder, file-name, channel, case-count and label-file problems (no file is opened)."""
    folder = spec.root / "imagesTr"
    if train is None:
        return [Problem(str(folder), "folder imagesTr is missing",
                        f"put the training images there as CASE_XXXX{spec.file_ending}")]
    out = naming_problems(spec, folder)
    if not train:
        out.append(Problem(str(folder), f"imagesTr holds no CASE_XXXX{spec.file_ending} files",
                           "put the training images there (one file per case and channel)"))
    out += channel_problems(spec, train) + case_count_problems(spec, train)
    if not spec.is_classification:
        out += label_file_problems(spec, train)
    if test:
        out += naming_problems(spec, spec.root / "imagesTs") + channel_problems(spec, test)
    return out


def naming_problems(spec: DatasetSpec, folder: Path) -> list[Problem]:
    """Files that are not CASE_XXXX<ending>, and channel indices beyond the declared channels."""
    out = []
    n, ending = spec.num_channels, spec.file_ending
    for f in _visible_files(folder):
        channel = channel_of(f.name, ending)
        if channel is None:
            what, fix = name_problem(f.name, ending) or ("", "")
            out.append(Problem(str(f), what, f"{fix} or move it out of {folder.name}"))
        elif channel[1] >= n:
            out.append(Problem(str(f), f"unknown channel {channel[1]:04d}: dataset.json declares {plural(n, 'channel')} "
                                       f"(0000–{n - 1:04d})",
                               "remove the file, or add the channel to channel_names in dataset.json"))
    return out


def channel_problems(spec: DatasetSpec, cases: Iterable[Case]) -> list[Problem]:
    """Channel files a case lacks (every declared channel must exist for every case)."""
    out = []
    for case in cases:
        present = [f.name for f in case.image_files if f.is_file()]
        for c, f in enumerate(case.image_files):
            if not f.is_file():
                out.append(Problem(str(f), f"channel {c:04d} ({spec.channel_names[c]}) of case '{case.case_id}' is "
                                           f"missing (the case has {len(present)} of the {spec.num_channels} "
                                           f"channels declared in dataset.json: {', '.join(present) or 'none'})",
                                   f"add {f.name}, or remove or rename the case's other files "
                                   f"(CASE_XXXX{spec.file_ending}, XXXX the channel index)"))
    return out


def case_count_problems(spec: DatasetSpec, train: Sequence[Case]) -> list[Problem]:
    """numTraining must equal the number of cases in imagesTr."""
    if spec.num_training == len(train):
        return []
    return [Problem(str(spec.json_path), f"numTraining is {spec.num_training} but imagesTr holds {len(train)} cases",
                    f"set \"numTraining\": {len(train)} in dataset.json if imagesTr is complete, "
                    "else add or remove cases")]


def label_file_problems(spec: DatasetSpec, train: Sequence[Case]) -> list[Problem]:
    """Missing labelsTr, cases without a label map, and label maps without images (orphans)."""
    folder, ending = spec.root / "labelsTr", spec.file_ending
    if not folder.is_dir():
        return [Problem(str(folder), "folder labelsTr is missing (segmentation dataset)",
                        f"put one label map CASE{ending} per training case there")]
    out = [Problem(str(c.label_file), f"label map of case '{c.case_id}' is missing",
                   f"add {c.case_id}{ending} to labelsTr, or remove the case from imagesTr")
           for c in train if c.label_file is not None and not c.label_file.is_file()]
    ids = {c.case_id for c in train}
    for f in _visible_files(folder):
        if (bad := name_problem(f.name, ending, channel=False)) is not None:
            out.append(Problem(str(f), bad[0], f"{bad[1]} or move it out of labelsTr"))
        elif f.name[: -len(ending)] not in ids:
            cid = f.name[: -len(ending)]
            out.append(Problem(str(f), f"label map has no images in imagesTr (orphan: no {cid}_0000{ending})",
                               "add the case's images to imagesTr, or delete the label file"))
    return out


def _visible_files(folder: Path) -> list[Path]:
    """Non-hidden plain files of a folder, sorted."""
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def _list_cases(spec: DatasetSpec, split: str) -> list[Case] | None:
    """Cases of a split; None when imagesTr is missing (imagesTs may be absent: then [])."""
    if not (spec.root / f"images{split}").is_dir():
        return None if split == "Tr" else []
    return spec.cases(split)


def _decide_dimension(cases: Sequence[Case]) -> tuple[int, str] | None:
    """(2 or 3, file name) from the first case whose channel 0 is a readable 2D/3D image."""
    for case in cases:
        h = inspect_header(case.image_files[0])
        if isinstance(h, ImageHeader) and h.effective_ndim() in (2, 3):
            return h.effective_ndim(), h.path.name
    return None


# ---------------------------------------------------------------- per case (run in workers)

def check_case(job: _CaseJob) -> _CaseResult:
    """Files of one case, channel grids (segmentation) and the label map's grid."""
    problems: list[Problem] = []
    case = job.case
    grids = [check_file(f, job, False, problems) if f.is_file() else None for f in case.image_files]
    ref = next(((f, g) for f, g in zip(case.image_files, grids) if g is not None), None)
    if job.same_grid and ref is not None:
        for f, g in zip(case.image_files, grids):
            if g is not None and f != ref[0] and (p := grid_problem(f, g, *ref, is_label=False)) is not None:
                problems.append(p)
    label = case.label_file
    if label is not None and label.is_file():
        g = check_file(label, job, True, problems)
        if g is not None and ref is not None and (p := grid_problem(label, g, *ref, is_label=True)) is not None:
            problems.append(p)
    return _CaseResult(case.case_id, grids[0], problems)


def grid_problem(path: Path, grid: Geometry, ref_path: Path, ref_grid: Geometry, is_label: bool) -> Problem | None:
    """A label map or further channel whose voxel grid differs from its case's channel-0 image, else None."""
    diff = grid.mismatch(ref_grid)
    if not diff:
        return None
    if is_label:
        return Problem(str(path), f"label grid differs from its image {ref_path.name} (label vs image: "
                                  f"{'; '.join(diff)})",
                       "save the label map with its image's size, spacing, origin and direction "
                       "(resample with nearest-neighbour)")
    return Problem(str(path), f"channel grid differs from {ref_path.name} ({'; '.join(diff)})",
                   "resample all channels of a case onto one grid (segmentation datasets need voxel-aligned "
                   "channels)")


def check_file(path: Path, job: _CaseJob, is_label: bool, problems: list[Problem]) -> Geometry | None:
    """Append one file's problems; its geometry in the dataset's dimension when its header is sound."""
    h = inspect_header(path)
    if isinstance(h, Problem):
        problems.append(h)
        return None
    kind = "label map" if is_label else "image"
    blocking = header_problems(h)
    if job.ndim is not None:
        blocking += dimension_problems(h, job.ndim, job.decided_by)
    scan = scan_nifti(path, job.deep)
    found = blocking + scan.damage
    if job.ndim is not None:
        found += component_problems(h, job.ndim, is_label)
    if scan.non_finite:
        found.append(non_finite_problem(path, scan.non_finite, kind, " (ITK reads them as 0)"))
    if job.deep and not blocking and not scan.damage:
        arr = read_pixels(path)
        if isinstance(arr, Problem):
            found.append(arr)
        else:
            found += [] if is_nifti(path) else finite_problems(path, arr, kind)
            found += label_value_problems(path, arr, job.label_values) if is_label else []
    problems += found
    return None if blocking else h.geometry_as(job.ndim or h.stored_ndim)


# ---------------------------------------------------------------- findings (classification)

def findings_problems(spec: DatasetSpec, grids: dict[str, Geometry | None] | None) -> list[Problem]:
    """A missing/malformed findings.csv, findings of unknown cases, and positions outside their image.

    `grids` maps each training case to its channel-0 geometry; None skips the per-case checks.
    """
    path = spec.findings_path
    assert path is not None
    try:
        findings = read_findings(path, spec.classes)
    except XtlunetError as exc:
        return [Problem(exc.path or str(path), exc.what, exc.fix or "repair the findings file")]
    out = patient_problems(path, findings)
    if grids is None:
        return out
    by_case = sorted(((f.case_id, f) for f in findings if f.case_id not in grids), key=lambda t: t[0])
    for cid, group in itertools.groupby(by_case, key=lambda t: t[0]):
        ids = ", ".join(f.finding_id for _, f in group)
        out.append(Problem(str(path), f"findings {ids} name case '{cid}', which imagesTr does not hold",
                           f"fix the case_id or add {cid}_0000{spec.file_ending} to imagesTr"))
    for f in findings:
        grid = grids.get(f.case_id)
        if f.position is not None and grid is not None:
            problem = position_problem(path, f, grid, f"{f.case_id}_0000{spec.file_ending}")
            out += [problem] if problem is not None else []
    return out


def patient_problems(path: Path, findings: Sequence[Finding]) -> list[Problem]:
    """Cases whose findings name different patients (the folds are grouped by patient)."""
    return [Problem(str(path), f"case {cid} has findings with different patient ids ({', '.join(ids)})",
                    "give every finding of a case the same patient_id")
            for cid, ids in case_patients(list(findings))[1].items()]
