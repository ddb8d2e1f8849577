"""What xtlunet prints while it works: progress bars that honour -q, and log lines that never share a bar's line.

Quiet is one setting, the environment variable XTLUNET_QUIET, so worker and DDP processes inherit it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Iterable, Iterator

QUIET_ENV = "XTLUNET_QUIET"


def is_quiet() -> bool:
    """Whether progress bars are hidden (-q)."""
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


@contextlib.contextmanager
def quiet_mode(quiet: bool) -> Iterator[None]:
    """Set quiet (or not) for the block and the processes it starts; the previous setting comes back after."""
    # TQDM_DISABLE hides bars made with tqdm directly; tqdm reads it when first imported in a process
    before = {var: os.environ.get(var) for var in (QUIET_ENV, "TQDM_DISABLE")}
    os.environ[QUIET_ENV] = "1" if quiet else "0"
    if quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        yield
    finally:
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def progress_bar(iterable: Iterable[Any] | None = None, *, disable: bool = False, **kwargs: Any):
    """A tqdm bar on stderr, hidden when quiet or `disable`."""
    from tqdm import tqdm

    return tqdm(iterable, disable=disable or is_quiet(), **kwargs)


class BarSafeHandler(logging.Handler):
    """Writes log records to stderr through tqdm.write, so a message gets its own line while a bar is drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record above the bars."""
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # never let logging break the run
            self.handleError(record)


def setup_logging(quiet: bool) -> None:
    """Log 'xtlunet' messages (warnings and errors only when quiet) as plain lines that bars do not swallow."""
    handler = BarSafeHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler], force=True)
