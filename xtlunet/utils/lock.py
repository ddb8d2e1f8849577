"""Folder locks: one xtlunet run at a time writes into a fold folder or a predict output folder.

The lock is a file, FOLDER/.xtlunet.lock, created with O_CREAT|O_EXCL (atomic on local disks and NFSv3+), holding
who made it: pid, host, start time, command. A lock whose process is gone (a dead pid, or a reused one, on this
host) is stale and taken over with a logged note; a lock made on another host is never taken over automatically.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from xtlunet.errors import XtlunetError
from xtlunet.utils.atomic import sweep_partial_files

try:
    import fcntl
except ImportError:  # not POSIX: takeovers of a stale lock are not serialised
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("xtlunet")

LOCK_NAME = ".xtlunet.lock"
_TRIES = 5  # attempts to create the lock when stale locks are taken over concurrently


@dataclass(frozen=True)
class LockRecord:
    """Who holds a lock."""

    pid: int
    host: str
    started: str
    command: str
    token: str
    pid_start: str | None = None  # the process's start time in clock ticks since boot (tells a reused pid apart)

    @classmethod
    def mine(cls) -> "LockRecord":
        """The record of this process."""
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"),
                   " ".join(["xtlunet", *sys.argv[1:]])[:300], secrets.token_hex(8), _process_start(os.getpid()))

    @classmethod
    def parse(cls, text: str) -> "LockRecord | None":
        """The record in a lock file's text, or None when it is not one."""
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), str(d["started"]), str(d.get("command", "")), str(d["token"]),
                       d.get("pid_start"))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        """'pid N on host H, started T: COMMAND'."""
        return f"pid {self.pid} on host {self.host}, started {self.started}" + (f": {self.command}"
                                                                                 if self.command else "")

    def is_stale(self) -> bool:
        """Whether the process that made the lock is gone (decidable on its own host only)."""
        if self.host != socket.gethostname():
            return False
        return not process_running(self.pid) or (self.pid_start is not None and _process_start(self.pid) not in
                                          (None, self.pid_start))


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    fields = _proc_stat(pid)
    return not (fields and fields[0] == "Z")


def _read(lock: Path) -> LockRecord | None:
    """The record in a lock file (None when it is unreadable or half-written)."""
    try:
        return LockRecord.parse(lock.read_text())
    except (OSError, UnicodeDecodeError):
        return None


def _held_error(lock: Path, what: str, held: LockRecord | None) -> XtlunetError:
    """The one-line error for a lock another run holds."""
    if held is None:
        return XtlunetError(f"{what} is locked by another xtlunet run (its lock record is unreadable)", path=lock,
                            fix=f"if no xtlunet run uses this folder any more, delete the lock: rm {lock}")
    if held.host != socket.gethostname():
        fix = f"if no xtlunet run on {held.host} uses this folder any more, delete the lock: rm {lock}"
    else:
        fix = f"wait for that run to finish, or stop it (kill {held.pid}); two runs would mix their files"
    return XtlunetError(f"{what} is in use by another xtlunet run ({held.describe()})", path=lock, fix=fix)


def _take_over(lock: Path, stale: LockRecord) -> None:
    """Remove a stale lock, unless it changed meanwhile (flock serialises takeovers on this host)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process is taking it over
            except OSError:
                pass
        with contextlib.suppress(FileNotFoundError):
            same_file = os.fstat(fd).st_ino == os.stat(lock).st_ino
            if same_file and LockRecord.parse(os.pread(fd, 1 << 16, 0).decode(errors="replace")) == stale:
                os.unlink(lock)
                log.warning("took over the lock %s of a run that is gone (%s)", lock, stale.describe())
    finally:
        os.close(fd)


def _acquire(lock: Path, what: str) -> LockRecord:
    """Create the lock file with this process's record, taking over a stale one; raise if another run holds it."""
    mine = LockRecord.mine()
    held: LockRecord | None = None
    for _ in range(_TRIES):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read(lock)
            if held is None or not held.is_stale():
                break
            _take_over(lock, held)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(asdict(mine)) + "\n")
        return mine
    raise _held_error(lock, what, held)


def _release(lock: Path, mine: LockRecord) -> None:
    """Remove the lock if it is still this process's."""
    if os.getpid() != mine.pid:  # a forked child leaving the block: the lock stays its parent's
        return
    current = _read(lock)
    if current == mine:
        lock.unlink(missing_ok=True)
    elif current is not None:
        log.warning("the lock %s was taken over by another run (%s) while this one held it", lock,
                    current.describe())


def _make_folder(folder: Path, what: str) -> list[Path]:
    """Create folder (and missing parents); returns the folders created, innermost first."""
    if folder.exists() and not folder.is_dir():
        raise XtlunetError(f"{what} is a file, not a folder", path=folder, fix="give a folder path")
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "folder") -> Iterator[Path]:
    """Hold FOLDER/.xtlunet.lock while the block runs (creating the folder), and sweep the temp files killed runs
    left there; another run's live lock stops this one with an error naming it. Folders it created and that stay
    empty are removed again, so a refused run leaves nothing behind."""
    folder = Path(folder)
    created = _make_folder(folder, what)
    lock = folder / LOCK_NAME
    try:
        mine = _acquire(lock, what)
        try:
            sweep_partial_files(folder, min_age=0)  # under the lock no other run writes here
            yield lock
        finally:
            _release(lock, mine)
    finally:
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()
