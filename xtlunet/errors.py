"""User-facing errors: one line that says what went wrong, where, and how to fix it."""
from __future__ import annotations

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
