"""findings.csv of classification datasets: case_id, finding_id, patient_id, x, y, z, label (LPS mm)."""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xtlunet.errors import XtlunetError

COLUMNS = ("case_id", "finding_id", "patient_id", "x", "y", "z", "label")


@dataclass(frozen=True)
class Finding:
    """One lesion (or a whole-image label when x, y, z are None)."""

    case_id: str
    finding_id: str
    patient_id: str
    position: tuple[float, float, float] | None
    label: int

    @property
    def key(self) -> str:
        """Unique id 'case/finding'."""
        return f"{self.case_id}/{self.finding_id}"


def read_findings(path: Path, classes: dict[str, int], labelled: bool = True) -> list[Finding]:
    """Parse findings.csv; labels may be class names or integers (optional, −1, when not labelled)."""
    if not path.is_file():
        raise XtlunetError("findings file is missing", path=path, fix="create it or fix \"findings\" in dataset.json")
    try:
        out = _read_rows(path, classes, labelled)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise XtlunetError(f"findings.csv is not a readable UTF-8 CSV file ({exc})", path=path,
                           fix=f"save it as plain UTF-8 CSV with the header {','.join(COLUMNS)}") from None
    if not out:
        raise XtlunetError("findings.csv has no rows", path=path, fix="add one row per finding")
    dup = sorted(k for k, n in Counter(f.key for f in out).items() if n > 1)
    if dup:
        raise XtlunetError(f"duplicate finding ids {', '.join(dup[:3])}", path=path, fix="make case_id/finding_id unique")
    return out


def _read_rows(path: Path, classes: dict[str, int], labelled: bool) -> list[Finding]:
    """Parse the header and every row of findings.csv."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        optional = ("x", "y", "z", "patient_id") + (() if labelled else ("label",))
        missing = [c for c in COLUMNS if c not in header and c not in optional]
        missing += [c for c in ("x", "y", "z") if c not in header and any(a in header for a in ("x", "y", "z"))]
        if missing:
            raise XtlunetError(f"findings.csv lacks columns {', '.join(missing)}", path=path,
                               fix=f"the header must be: {','.join(COLUMNS)}")
        values = set(classes.values()) | (set() if labelled else {-1})
        return [_parse_row({k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)},
                           line, path, classes, values)
                for line, row in enumerate(reader, start=2)]


def _parse_row(row: dict[str, str], line: int, path: Path, classes: dict[str, int], values: set[int]) -> Finding:
    """Parse one findings.csv row."""
    label_text = row.get("label", "")
    if label_text in classes:
        label = classes[label_text]
    else:
        try:
            label = int(float(label_text))
        except ValueError:
            label = -1
    if label not in values:
        raise XtlunetError(f"line {line}: label '{label_text}' is not one of the classes {classes}", path=path,
                           fix="use a class name or value from dataset.json \"classes\"")
    coords = [row.get(a, "") for a in ("x", "y", "z")]
    if all(c == "" for c in coords):
        pos = None
    else:
        try:
            pos = tuple(float(c) for c in coords)
        except ValueError:
            raise XtlunetError(f"line {line}: x, y, z must be numbers in mm (or all empty)", path=path,
                               fix="write world coordinates in LPS mm") from None
    if not row.get("case_id"):
        raise XtlunetError(f"line {line}: case_id is empty", path=path, fix="fill in the case id")
    fid = row.get("finding_id") or "0"
    return Finding(row["case_id"], fid, row.get("patient_id") or row["case_id"], pos, label)


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
