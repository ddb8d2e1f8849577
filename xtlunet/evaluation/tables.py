"""Result tables: CSV files (written atomically) and Markdown tables for reports."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from xtlunet.utils.atomic import write_csv

__all__ = ["markdown_table", "write_csv"]


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
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(_cell(c, float_format) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c), float_format) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"
