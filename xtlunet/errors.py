"""User-facing errors: one line that says what went wrong, where, and how to fix it."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Sequence


class XtlunetError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits with code 2."""

    def __init__(self, what: str, *, path: str | Path | None = None, fix: str | None = None,
                 details: Sequence[str] = ()) -> None:
        self.what = what.strip().rstrip(".")
        self.path = str(path) if path is not None else None
        self.fix = fix.strip().rstrip(".") if fix else None
        self.details = [d.replace("\n", " ") for d in details]
        super().__init__(self.one_line())

    def __reduce__(self):
        """Pickle with all fields, so errors raised in worker processes arrive intact."""
        return (_rebuild, (self.what, self.path, self.fix, tuple(self.details)))

    def one_line(self) -> str:
        """Render the error as a single line: what [file] — fix."""
        text = self.what
        if self.path:
            text += f" [{self.path}]"
        if self.fix:
            text += f" — fix: {self.fix}"
        return text.replace("\n", " ")


def _rebuild(what: str, path: str | None, fix: str | None, details: tuple[str, ...]) -> XtlunetError:
    """Unpickle an XtlunetError."""
    return XtlunetError(what, path=path, fix=fix, details=details)


def did_you_mean(value: str, options: Sequence[str]) -> str:
    """A ' did you mean X?' hint for an unknown name, or an empty string."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def look_up_option(value: str, options: Sequence[str], kind: str, fix: str | None = None) -> str:
    """Return value if it is one of options, else raise an XtlunetError with a did-you-mean hint."""
    if value in options:
        return value
    raise XtlunetError(f"unknown {kind} '{value}'{did_you_mean(value, options)}",
                       fix=fix or f"use one of: {', '.join(map(str, options))}")


def noun(n: int, word: str, many: str | None = None) -> str:
    """The form of `word` for n things: 'case' for 1, 'cases' otherwise ('many' for an irregular plural)."""
    return word if n == 1 else many or word + "s"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 case', '2 cases', '0 cases' (plural(n, 'process', 'processes') for an irregular plural)."""
    return f"{n} {noun(n, word, many)}"


_OS_PROBLEMS = {  # errno: (what, fix); {place}: the data root (or folder) the path lies in; {elsewhere}: a way out
    errno.ENOSPC: ("no space left on the disk", "free space on the disk of {place}{elsewhere}, then run the command "
                   "again; finished cases are kept"),
    errno.EDQUOT: ("disk quota exceeded", "free space in your quota on {place}{elsewhere}, then run the command "
                   "again; finished cases are kept"),
    errno.EROFS: ("cannot write: the file system is read-only", "make {place} writable{elsewhere}"),
    errno.EACCES: ("permission denied", "make {place} readable and writable for you{elsewhere}"),
    errno.EPERM: ("operation not permitted", "make {place} writable for you{elsewhere}"),
}


def os_error_to_user_error(exc: OSError) -> XtlunetError | None:
    """The one-line error of a file-system fault (disk full, read-only, no permission, a file where a folder must
    be), naming the data root (XTLUNET_raw / _preprocessed / _results) the path lies in; None for any other
    OSError (a programming error, which keeps its traceback)."""
    from xtlunet.paths import root_of
    from xtlunet.utils.atomic import target_of

    path = target_of(exc.filename) if isinstance(exc.filename, (str, Path)) else None
    found = root_of(path) if path is not None else None
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return _file_in_the_way(path, found) if path is not None else None
    if exc.errno not in _OS_PROBLEMS:
        return None
    what, fix = _OS_PROBLEMS[exc.errno]
    if found is None:
        return XtlunetError(what, path=path, fix=fix.format(place="the folder written to",
                                                            elsewhere=" (or write elsewhere)"))
    var, root = found
    return XtlunetError(f"{what} ({var})", path=path,
                        fix=fix.format(place=f"{var}={root}", elsewhere=f" (or point {var} at another folder)"))


def _file_in_the_way(path: Path, found: tuple[str, Path] | None) -> XtlunetError | None:
    """A folder is needed where a file is: name that file, and the data root's variable when it is (under) it."""
    path = Path(os.path.abspath(path))
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is None:
        return None
    if found is not None and (blocker == found[1] or blocker in found[1].parents):
        var = found[0]
        return XtlunetError(f"{var} is not a folder: {blocker} is a file", path=found[1],
                            fix=f"point {var} at a folder")
    return XtlunetError("a file is in the way where a folder is needed", path=blocker,
                        fix="move or delete that file, or choose another output path")
