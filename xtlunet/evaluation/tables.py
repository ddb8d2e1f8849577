"""Result tables: CSV files (written atomically) and Markdown tables for reports."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from xtlunet.utils.atomic import atomic_path


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of the rows, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write rows as CSV atomically; columns default to every key in order of appearance, missing cells empty."""
    path = Path(path)
    cols = list(columns) if columns is not None else _columns(rows)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return path


def _cell(value: Any, float_format: str) -> str:
    """One Markdown cell: floats formatted, None empty, pipes escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return float_format.format(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                   float_format: str = "{:.4g}") -> str:
    """A GitHub-flavoured Markdown table of the rows (columns default to every key), ending in a newline."""
    cols = list(columns) if columns is not None else _columns(rows)
    lines = ["| " + " | ".join(_cell(c, float_format) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c), float_format) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"
