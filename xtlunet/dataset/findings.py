"""findings.csv of classification datasets: case_id, finding_id, patient_id, x, y, z, label (LPS mm)."""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from xtlunet.dataset.csv_table import ID, INT, OPTIONAL_FLOAT, TEXT, Column, Kind, Row, Table, read_table
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.integrity_files import ImageHeader, Problem, inspect_header
from xtlunet.dataset.spec import Case
from xtlunet.errors import XtlunetError, plural

COLUMNS = ("case_id", "finding_id", "patient_id", "x", "y", "z", "label")
AXES = ("x", "y", "z")
_HEADER_FIX = f"the header must be: {','.join(COLUMNS)}"


@dataclass(frozen=True)
class Finding:
    """One lesion (or a whole-image label when x, y, z are None); `line` is its row in the CSV (0: not from one)."""

    case_id: str
    finding_id: str
    patient_id: str
    position: tuple[float, float, float] | None
    label: int
    line: int = field(default=0, compare=False)

    @property
    def key(self) -> str:
        """Unique id 'case/finding'."""
        return f"{self.case_id}/{self.finding_id}"


def read_findings(path: Path, classes: dict[str, int], labelled: bool = True,
                  cases: Sequence[Case] | None = None) -> list[Finding]:
    """Parse findings.csv; labels may be class names or integers (optional, −1, when not labelled).

    With `cases`, a located finding of one of them must lie inside the case's channel-0 image
    (`check_inside_images`, the check of `plan-and-preprocess --verify`).
    """
    if not path.is_file():
        raise XtlunetError("findings file is missing", path=path, fix="create it or fix \"findings\" in dataset.json")
    table = read_table(path, finding_columns(classes, labelled), _HEADER_FIX)
    given = [a for a in AXES if a in table.header]
    if given and len(given) < len(AXES):
        raise XtlunetError(f"{path.name} lacks columns {', '.join(a for a in AXES if a not in given)}", path=path,
                           fix=f"give all of x, y, z (or none, for whole-image labels); {_HEADER_FIX}")
    out = [_finding(table, row) for row in table.rows]
    if not out:
        raise XtlunetError(f"{path.name} has no rows", path=path, fix="add one row per finding")
    dup = sorted(k for k, n in Counter(f.key for f in out).items() if n > 1)
    if dup:
        raise XtlunetError(f"duplicate finding ids {', '.join(dup[:3])}", path=path, fix="make case_id/finding_id unique")
    if cases is not None:
        check_inside_images(path, out, cases)
    return out


def finding_columns(classes: dict[str, int], labelled: bool) -> list[Column]:
    """The column spec of findings.csv: x, y, z and patient_id optional, label optional when not labelled."""
    coords = "write world coordinates in LPS mm (all three empty for a whole-image label)"
    return [Column("case_id", ID, fix="fill in the case id"), Column("finding_id", TEXT),
            Column("patient_id", TEXT, required=False, default=""),
            *(Column(a, OPTIONAL_FLOAT, required=False, fix=coords) for a in AXES),
            Column("label", label_kind(classes, labelled), required=labelled, default=-1,
                   fix="use a class name or value from dataset.json \"classes\"")]


def label_kind(classes: dict[str, int], labelled: bool) -> Kind:
    """A class name or value of `classes` (empty, −1, allowed when not labelled)."""
    values = set(classes.values())

    def parse(text: str) -> int:
        """The class value of a name or an integer."""
        if text in classes:
            return classes[text]
        if not labelled and text in ("", "-1"):
            return -1
        value = INT.parse(text)
        if value not in values:
            raise ValueError(text)
        return value

    named = ", ".join(f"{v} {n}" for n, v in sorted(classes.items(), key=lambda kv: kv[1]))
    return Kind(parse, f"one of the classes ({named})" + ("" if labelled else " or empty"))


def _finding(table: Table, row: Row) -> Finding:
    """One checked row as a Finding: x, y, z all given or all empty."""
    coords = [row[a] for a in AXES]
    if any(c is None for c in coords) and not all(c is None for c in coords):
        empty = next(a for a, c in zip(AXES, coords) if c is None)
        raise table.error(row, empty, "is empty while other coordinates are given",
                          "give x, y and z in LPS mm, or leave all three empty for a whole-image label")
    pos = None if coords[0] is None else tuple(coords)
    return Finding(row["case_id"], row["finding_id"] or "0", row["patient_id"] or row["case_id"], pos, row["label"],
                   row.line)


def case_patients(findings: list[Finding]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(patient of each case, cases whose findings name different patients).

    An empty patient_id (the case itself) defers to a patient that another finding of the case names.
    """
    named: dict[str, list[str]] = {}
    for f in findings:
        ids = named.setdefault(f.case_id, [])
        if f.patient_id != f.case_id and f.patient_id not in ids:
            ids.append(f.patient_id)
    return ({c: ids[0] if ids else c for c, ids in named.items()},
            {c: ids for c, ids in named.items() if len(ids) > 1})


def prediction_columns(class_names: list[str], labelled: bool) -> list[str]:
    """predictions.csv's one schema: the findings columns, then p_<class> per class (value order), then predicted."""
    head = [c for c in COLUMNS if c != "label"] + (["label"] if labelled else [])
    return head + [f"p_{n}" for n in class_names] + ["predicted"]


def prediction_row(finding: Finding, probabilities: list[float], class_names: list[str],
                   labelled: bool) -> dict[str, object]:
    """One predictions.csv row of a finding with its class probabilities (by class value)."""
    pos = finding.position or ("", "", "")
    row: dict[str, object] = {"case_id": finding.case_id, "finding_id": finding.finding_id,
                              "patient_id": finding.patient_id, "x": pos[0], "y": pos[1], "z": pos[2]}
    if labelled:
        row["label"] = finding.label
    row.update({f"p_{n}": round(float(p), 6) for n, p in zip(class_names, probabilities)})
    row["predicted"] = class_names[max(range(len(probabilities)), key=lambda k: probabilities[k])]
    return row


def finding_center(index: object, shape: tuple[int, ...]) -> np.ndarray:
    """A finding's voxel position in a preprocessed array (C, *spatial): its index, or the image centre for a
    whole-image label (index None)."""
    return np.asarray(index if index is not None else [(n - 1) / 2 for n in shape[1:]], dtype=float)


# ---------------------------------------------------------------- geometry: a finding must lie inside its image

def check_inside_images(path: Path, findings: Sequence[Finding], cases: Sequence[Case]) -> None:
    """Refuse (one line) findings whose position lies outside their case's channel-0 image (header read only)."""
    images = {c.case_id: c.image_files[0] for c in cases}
    headers: dict[str, ImageHeader | Problem] = {}
    problems: list[Problem] = []
    for f in findings:
        if f.position is None or f.case_id not in images:
            continue
        if f.case_id not in headers:
            headers[f.case_id] = inspect_header(images[f.case_id])
        header = headers[f.case_id]
        if isinstance(header, ImageHeader):  # an unreadable image is refused where it is read
            problem = position_problem(path, f, header.geometry_as(header.effective_ndim()), header.path.name)
            problems += [problem] if problem is not None else []
    if problems:
        more = f" (and {plural(len(problems) - 1, 'more finding')} outside their images)" if len(problems) > 1 else ""
        raise XtlunetError(problems[0].what + more, path=problems[0].path, fix=problems[0].fix)


def position_problem(path: Path, finding: Finding, grid: Geometry, image: str) -> Problem | None:
    """A finding whose LPS world position lies outside its case's channel-0 image: how far (mm) and where."""
    assert finding.position is not None
    point = np.asarray(finding.position[: grid.ndim], dtype=np.float64)
    try:
        index = grid.world_to_index(point)
    except np.linalg.LinAlgError:
        return None
    if grid.contains_index(index):
        return None
    lo, hi = world_extent(grid)
    extent = ", ".join(f"{a} {lo_:.1f}..{hi_:.1f}" for a, lo_, hi_ in zip("xyz", lo, hi))
    coords = ", ".join(f"{v:.1f}" for v in point)
    flipped = point.copy()
    flipped[:2] *= -1
    hint = ("; with x and y negated it would lie inside, so the coordinates look like RAS"
            if grid.contains_index(grid.world_to_index(flipped)) else "")
    where = f"{path.name} line {finding.line}: " if finding.line else ""
    return Problem(str(path), f"{where}finding {finding.key} at ({coords}) mm LPS lies outside {image} by "
                              f"{distance_outside_mm(grid, index):.1f} mm (voxel index z, y, x = "
                              f"{', '.join(f'{i:.1f}' for i in index)}; image shape {grid.shape}, extent {extent} mm)"
                              f"{hint}",
                   "give the finding's position in LPS world mm within its own case's image "
                   "(negate x and y of RAS coordinates)")


def distance_outside_mm(grid: Geometry, index: np.ndarray) -> float:
    """Distance (mm) from a continuous array index to the nearest point of the image's voxel box."""
    upper = np.asarray(grid.shape, dtype=np.float64) - 0.5
    excess = np.maximum(np.maximum(-0.5 - index, index - upper), 0.0)
    return float(np.linalg.norm(excess * np.asarray(grid.spacing, dtype=np.float64)))


def world_extent(grid: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis (x, y, z) minimum and maximum world coordinate covered by the voxels (LPS mm)."""
    bounds = [(-0.5, s - 0.5) for s in grid.shape]
    corners = np.array([grid.index_to_world(c) for c in itertools.product(*bounds)])
    return corners.min(axis=0), corners.max(axis=0)
