"""The one CSV reader: every row checked field by field (count against the header, type of each field).

Every CSV the project reads (findings.csv, predictions.csv) goes through `read_table`. An error names the file,
the line as an editor numbers it (the header is line 1) and the column, with a fix.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from xtlunet.errors import XtlunetError


@dataclass(frozen=True)
class Kind:
    """What a field must be: a parser (raising ValueError for a bad field) and its description for errors."""

    parse: Callable[[str], Any]
    expected: str


@dataclass(frozen=True)
class Column:
    """One expected column: its name and kind; an optional column the header lacks takes `default`."""

    name: str
    kind: Kind
    required: bool = True
    default: Any = None
    fix: str | None = None


@dataclass(frozen=True)
class Row:
    """One data row: its line in the file (header = 1) and its parsed values by column name."""

    line: int
    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        """The parsed value of a column."""
        return self.values[name]


@dataclass(frozen=True)
class Table:
    """A checked CSV file: its path, header (stripped names) and typed rows."""

    path: Path
    header: list[str]
    rows: list[Row]

    def error(self, row: Row, column: str, what: str, fix: str) -> XtlunetError:
        """An error about one field of one row."""
        return field_error(self.path, row.line, column, what, fix)


def field_error(path: Path, line: int, column: str, what: str, fix: str) -> XtlunetError:
    """'NAME line L, column 'C': WHAT [PATH] — fix: FIX' (the format of every CSV field error)."""
    return XtlunetError(f"{path.name} line {line}, column '{column}': {what}", path=path, fix=fix)


def _text(value: str) -> str:
    """Any text (already stripped)."""
    return value


def _identifier(value: str) -> str:
    """Non-empty text."""
    if not value:
        raise ValueError("empty")
    return value


def _integer(value: str) -> int:
    """An integer ('3', '-1'; '3.0' as pandas writes it), never a fraction."""
    try:
        return int(value)
    except ValueError:
        number = float(value)
        if not number.is_integer():
            raise
        return int(number)


def _number(value: str) -> float:
    """A finite number."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _optional_number(value: str) -> float | None:
    """A finite number, or None for an empty field."""
    return None if value == "" else _number(value)


def _probability(value: str) -> float:
    """A number from 0 to 1."""
    number = _number(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("out of range")
    return number


TEXT = Kind(_text, "text")
ID = Kind(_identifier, "a non-empty id")
INT = Kind(_integer, "an integer")
FLOAT = Kind(_number, "a finite number")
OPTIONAL_FLOAT = Kind(_optional_number, "a finite number or empty")
PROBABILITY = Kind(_probability, "a probability from 0 to 1")


def read_table(path: Path, columns: Sequence[Column] | Callable[[list[str]], Sequence[Column]], fix: str) -> Table:
    """Read a UTF-8 CSV file whose every row has the header's field count and fields of the columns' kinds.

    `columns` may be a function of the header (for columns named after classes); columns the spec does not
    name are allowed and ignored; blank rows are skipped; `fix` describes the expected format.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return _read(path, csv.reader(fh, strict=True), columns, fix)
    except UnicodeDecodeError as exc:
        raise XtlunetError(f"{path.name} is not a readable UTF-8 CSV file ({exc.reason} at byte {exc.start})",
                           path=path, fix=f"save it as plain UTF-8 CSV; {fix}") from None
    except OSError as exc:
        raise XtlunetError(f"cannot read {path.name} ({exc.strerror})", path=path,
                           fix="check the path and the file's permissions") from None


def _read(path: Path, reader: Any, columns: Sequence[Column] | Callable[[list[str]], Sequence[Column]],
          fix: str) -> Table:
    """Header check, then every record parsed against the columns (line numbers as an editor shows them)."""
    try:
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise XtlunetError(f"{path.name} is empty (no header line)", path=path, fix=fix)
        spec = list(columns(header) if callable(columns) else columns)
        where = _header_positions(path, header, spec, fix)
        rows, last = [], reader.line_num
        for record in reader:
            line, last = last + 1, reader.line_num
            if any(field.strip() for field in record):
                rows.append(_parse_record(path, line, record, header, spec, where, fix))
    except csv.Error as exc:
        raise XtlunetError(f"{path.name} line {reader.line_num}: not valid CSV ({exc})", path=path,
                           fix=f"quote fields that contain commas or quotes; {fix}") from None
    return Table(path, header, rows)


def _header_positions(path: Path, header: list[str], spec: Sequence[Column], fix: str) -> dict[str, int]:
    """Position of each specified column in the header; refuses empty or repeated names and missing columns."""
    for k, name in enumerate(header):
        if not name:
            raise XtlunetError(f"{path.name} line 1: header field {k + 1} is empty", path=path,
                               fix=f"name every column or delete the empty one (a trailing comma?); {fix}")
        if header.index(name) != k:
            raise XtlunetError(f"{path.name} line 1: column '{name}' appears twice in the header", path=path,
                               fix=f"keep one column of each name; {fix}")
    missing = [c.name for c in spec if c.required and c.name not in header]
    if missing:
        raise XtlunetError(f"{path.name} lacks columns {', '.join(missing)}", path=path, fix=fix)
    return {c.name: header.index(c.name) for c in spec if c.name in header}


def _parse_record(path: Path, line: int, record: list[str], header: list[str], spec: Sequence[Column],
                  where: dict[str, int], fix: str) -> Row:
    """One record: its field count against the header, then each specified field parsed by its kind."""
    if len(record) != len(header):
        if len(record) > len(header):
            column, detail = header[-1], f"extra value '{record[len(header)].strip()}' after this last column"
        else:
            after = " or the columns after it" if len(header) - len(record) > 1 else ""
            column, detail = header[len(record)], f"no value for this column{after}"
        raise field_error(path, line, column, f"the row has {len(record)} fields but the header has {len(header)} "
                          f"({detail})", f"give every row exactly the header's {len(header)} fields and quote "
                          f"fields that contain commas; {fix}")
    values: dict[str, Any] = {}
    for column in spec:
        if column.name not in where:
            values[column.name] = column.default
            continue
        text = record[where[column.name]].strip()
        try:
            values[column.name] = column.kind.parse(text)
        except ValueError:
            raise field_error(path, line, column.name, f"'{text}' is not {column.kind.expected}",
                              column.fix or fix) from None
    return Row(line, values)
