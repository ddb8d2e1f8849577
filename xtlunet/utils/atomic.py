"""Atomic writes: every file appears complete or not at all (temp file + rename).

Every temp file is named `.NAME.XXXXXXXX.partial.SUFFIX` beside its target and holds an flock while it is written;
`sweep_partial_files` removes the ones a killed run left behind.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: temp files are told apart by age only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("xtlunet")

PARTIAL_PATTERN = re.compile(r"^\.(?P<name>.+)\.[^.]+\.partial(\.[^.]+)*$")
STALE_AFTER_S = 2.0  # an unlocked temp file older than this belongs to no running write
_swept: set[str] = set()  # folders this process has swept (each once, before its first write there)


def partial_name(path: Path) -> str:
    """The temp-file name of a write to `path`: .NAME.XXXXXXXX.partial.SUFFIX (the real suffix last)."""
    return f".{path.name}.{secrets.token_hex(4)}.partial{''.join(path.suffixes) or '.tmp'}"


def target_of(path: str | Path) -> Path:
    """The file a temp file of atomic_path stands for (any other path unchanged)."""
    path = Path(path)
    found = PARTIAL_PATTERN.match(path.name)
    return path.with_name(found.group("name")) if found else path


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new temp file beside path (mode 0o666 less the umask, as open() makes files) and flock it."""
    while True:
        tmp = path.with_name(partial_name(path))
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            with contextlib.suppress(OSError):  # e.g. ENOLCK on an NFS mount without locking: age guards it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, tmp


def _in_use(path: str) -> bool:
    """Whether a live write holds the temp file's flock (a file that cannot be opened counts as in use)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # locking unsupported here: the age check decides
    finally:
        os.close(fd)
    return False


def sweep_partial_files(folder: str | Path, min_age: float = STALE_AFTER_S) -> list[Path]:
    """Remove temp files of atomic writes that killed runs left in `folder`; returns what was removed.

    A temp file is removed only when it matches .NAME.XXXX.partial.SUFFIX, no running write holds its lock and it
    is older than `min_age` seconds, so a sweep never touches another process's write in progress.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            if (not PARTIAL_PATTERN.match(entry.name) or not entry.is_file(follow_symlinks=False)
                    or now - entry.stat(follow_symlinks=False).st_mtime < min_age or _in_use(entry.path)):
                continue
            os.unlink(entry.path)
        except OSError:
            continue  # gone meanwhile, or not ours to remove: the write that needs the folder reports it
        removed.append(Path(entry.path))
        log.info("removed %s, left by an interrupted run", entry.path)
    return removed


def _sweep_once(folder: Path) -> None:
    """Sweep a folder the first time this process writes into it."""
    key = os.path.abspath(folder)
    if key not in _swept:
        _swept.add(key)
        sweep_partial_files(folder)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    fd, tmp = _create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None:  # e.g. a full disk's write(): say which file
            exc.filename = str(path)
        raise
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, pretty-printed; NaN and ±inf become null (JSON has no such numbers)."""
    text = json.dumps(json_ready(obj), indent=2, sort_keys=False, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def json_ready(obj: Any) -> Any:
    """obj with numpy values as Python values, paths as strings and non-finite floats as None."""
    if isinstance(obj, Mapping):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write rows as CSV atomically; columns default to every key in order of appearance, missing cells empty."""
    path = Path(path)
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return path


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save a .npy array atomically (memory-mappable on load)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save atomically through a Python file, so a full disk raises OSError (not torch's RuntimeError)."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a syntax error into an XtlunetError that names the file."""
    from xtlunet.errors import XtlunetError

    path = Path(path)
    if not path.is_file():
        raise XtlunetError("file not found", path=path, fix="check the path")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise XtlunetError(f"invalid JSON ({exc})", path=path, fix="repair or regenerate the file") from None
