"""Job-array parts (`--num-parts N --part-id K`): a deterministic split of a case list into N disjoint parts.

The cases are sorted by id and case i of that order belongs to part i mod N, so every part of one N, run in any
order and on any machine, sees the same split, and the parts together cover every case exactly once. A run
without parts is `WHOLE` (part 0 of 1).
"""
from __future__ import annotations

import contextlib
import csv
import logging
import time
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping, Sequence, TypeVar

from xtlunet.errors import XtlunetError
from xtlunet.utils.atomic import write_csv
from xtlunet.utils.lock import LOCK_NAME, folder_lock

log = logging.getLogger("xtlunet")
T = TypeVar("T")
WAIT_S = 3600.0  # how long a part waits for another part's lock on the shared set-up (fingerprint, plan)
POLL_S = 2.0


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` (0 ≤ index < count) of a sorted case list."""

    index: int = 0
    count: int = 1

    @property
    def is_whole(self) -> bool:
        """Whether this is an unsharded run (every case)."""
        return self.count == 1

    @property
    def label(self) -> str:
        """'part K of N' (K as given to --part-id)."""
        return f"part {self.index} of {self.count}"

    @property
    def tag(self) -> str:
        """'part-K-of-N', for file names."""
        return f"part-{self.index}-of-{self.count}"

    def select(self, items: Iterable[T], key: Callable[[T], str] = attrgetter("case_id")) -> list[T]:
        """The items of this part: item i of the list sorted by `key` (a case id) when i mod count == index."""
        ordered = sorted(items, key=key)
        return [item for i, item in enumerate(ordered) if i % self.count == self.index]


WHOLE = Part()


def make_part(num_parts: int | None, part_id: int | None) -> Part:
    """The part of --num-parts N --part-id K (both or neither; 0 ≤ K < N); WHOLE when neither is given."""
    if num_parts is None and part_id is None:
        return WHOLE
    example = "e.g. --num-parts 10 --part-id $SLURM_ARRAY_TASK_ID with #SBATCH --array=0-9"
    if num_parts is None or part_id is None:
        given, missing = ("--part-id", "--num-parts") if num_parts is None else ("--num-parts", "--part-id")
        raise XtlunetError(f"{given} needs {missing}", fix=f"give both ({example}) or neither")
    for option, value, low in (("--num-parts", num_parts, 1), ("--part-id", part_id, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise XtlunetError(f"{option} must be a whole number ≥ {low}, got {value!r}", fix=example)
    if part_id >= num_parts:
        raise XtlunetError(f"--part-id {part_id} is out of range for --num-parts {num_parts} (parts are numbered "
                           f"0–{num_parts - 1})", fix=f"give --part-id 0–{num_parts - 1}: a job array of "
                           f"--num-parts {num_parts} is #SBATCH --array=0-{num_parts - 1}")
    return Part(part_id, num_parts)


def output_lock(folder: Path, what: str, part: Part) -> ContextManager[Path]:
    """The lock of a run writing into `folder`: the folder's own for a whole run; for a part, one of that part
    only (OUT/.part-K-of-N/.xtlunet.lock, removed with its folder afterwards), as the parts write disjoint files."""
    if part.is_whole:
        return folder_lock(folder, what)
    return folder_lock(folder / f".{part.tag}", f"{what} ({part.label})")


@contextlib.contextmanager
def waiting_lock(folder: Path, what: str, wait_s: float = WAIT_S, poll_s: float = POLL_S) -> Iterator[Path]:
    """Hold `folder`'s lock, waiting (up to `wait_s`) while another run holds it: parts take turns here."""
    deadline = time.monotonic() + wait_s
    waited = False
    with contextlib.ExitStack() as stack:
        while True:
            try:
                lock = stack.enter_context(folder_lock(folder, what))
                break
            except XtlunetError as err:
                if not (err.path or "").endswith(LOCK_NAME):
                    raise
                if time.monotonic() >= deadline:
                    raise XtlunetError(f"{err.what} (waited {wait_s / 60:.0f} min)", path=err.path,
                                       fix=err.fix) from None
                if not waited:
                    log.info("waiting for another run to finish with %s: %s", folder, err.what)
                    waited = True
                time.sleep(poll_s)
        yield lock


def part_file(path: Path, part: Part) -> Path:
    """The file a part writes in place of `path`: NAME.part-K-of-N.SUFFIX."""
    return path.with_name(f"{path.stem}.{part.tag}{path.suffix}")


def write_part_table(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str], part: Part,
                     case_ids: Iterable[str]) -> Path | None:
    """Write a part's rows of a per-case table (a `case_id` column) to its part file, then, once every part's file
    is there, `path` itself: the rows of all parts in case order, the table a whole run writes (none when no part
    has a row). `case_ids`: every case of the run. Returns `path` when it was written."""
    write_csv(rows, part_file(path, part), columns)
    order = {cid: i for i, cid in enumerate(sorted(case_ids))}
    merged: list[dict[str, str]] = []
    for k in range(part.count):
        other = Part(k, part.count)
        rows_k = _part_rows(part_file(path, other), columns, set(other.select(order, key=str)))
        if rows_k is None:
            return None
        merged += rows_k
    if not merged:
        return None
    merged.sort(key=lambda row: order[row["case_id"]])  # stable: a case's rows keep their order
    write_csv(merged, path, columns)
    log.info("wrote %s from the files of all %d parts", path, part.count)
    return path


def _part_rows(path: Path, columns: Sequence[str], owned: set[str]) -> list[dict[str, str]] | None:
    """The rows of one part's file, or None when it is missing (not done yet) or not from this run."""
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    foreign = sorted({row.get("case_id") or "" for row in rows} - owned)
    if list(reader.fieldnames or []) != list(columns) or foreign:
        log.warning("%s is not from this run (%s): the combined table is written once that part is run again",
                    path, f"cases {', '.join(foreign[:3])} are not in its part" if foreign else "other columns")
        return None
    return rows
