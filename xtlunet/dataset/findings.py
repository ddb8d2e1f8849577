"""findings.csv of classification datasets: case_id, finding_id, patient_id, x, y, z, label (LPS mm)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

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


def read_findings(path: Path, classes: dict[str, int]) -> list[Finding]:
    """Parse findings.csv; labels may be class names or integers; empty patient_id → the case id."""
    if not path.is_file():
        raise XtlunetError("findings file is missing", path=path, fix="create it or fix \"findings\" in dataset.json")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header and c not in ("x", "y", "z", "patient_id")]
        missing += [c for c in ("x", "y", "z") if c not in header and any(a in header for a in ("x", "y", "z"))]
        if missing:
            raise XtlunetError(f"findings.csv lacks columns {', '.join(missing)}", path=path,
                               fix=f"the header must be: {','.join(COLUMNS)}")
        out: list[Finding] = []
        values = set(classes.values())
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            out.append(_parse_row(row, line, path, classes, values))
    if not out:
        raise XtlunetError("findings.csv has no rows", path=path, fix="add one row per finding")
    keys = [f.key for f in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise XtlunetError(f"duplicate finding ids {', '.join(dup[:3])}", path=path, fix="make case_id/finding_id unique")
    return out


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
