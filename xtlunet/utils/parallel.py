"""Parallel map over cases: an ordered lazy iterator, and a list map with a progress bar; worker errors keep their
type."""
from __future__ import annotations

import multiprocessing as mp
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from multiprocessing.context import BaseContext
from typing import Callable, Iterable, Iterator, TypeVar

from xtlunet.utils.console import progress_bar

T = TypeVar("T")
R = TypeVar("R")


def _context(start_method: str | None) -> BaseContext:
    """The context of `start_method`; by default spawn where the program chose spawn, else fork."""
    if start_method is None:
        start_method = "spawn" if mp.get_start_method(allow_none=True) == "spawn" else "fork"
    return mp.get_context(start_method)


def _outcome(fn: Callable[[T], R], job: T) -> R | Exception:
    """fn(job), or the exception it raised."""
    try:
        return fn(job)
    except Exception as exc:  # handed to the caller with its job
        return exc


def _result(future: Future[R]) -> R | Exception:
    """A finished job's result, or the exception it (or its dead worker) raised."""
    try:
        return future.result()
    except Exception as exc:
        return exc


def imap_cases(fn: Callable[[T], R], jobs: Iterable[T], workers: int = 1,
               start_method: str | None = None) -> Iterator[tuple[T, R | Exception]]:
    """(job, fn(job) or the exception it raised) in job order; with workers > 1, processes run ahead of the reader.

    Closing the iterator early cancels the jobs not yet started.
    """
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, _outcome(fn, job)
        return
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=_context(start_method)) as pool:
        futures = deque(pool.submit(fn, job) for job in jobs)
        try:
            for job in jobs:
                yield job, _result(futures.popleft())
        finally:
            for future in futures:
                future.cancel()


def _raise_failure(outcome: R | Exception) -> R:
    """The result, or raise the exception the job raised."""
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def map_cases(fn: Callable[[T], R], jobs: Iterable[T], num_workers: int = 1, desc: str = "cases",
              start_method: str | None = None, leave: bool = False) -> list[R]:
    """Apply fn to each job (in order) in `num_workers` processes, showing a progress bar; the first error raises
    (after the bar is closed, so its message starts a line of its own)."""
    jobs = list(jobs)
    with closing(imap_cases(fn, jobs, num_workers, start_method)) as outcomes, \
            progress_bar(outcomes, total=len(jobs), desc=desc, unit="case", leave=leave) as bar:
        return [_raise_failure(outcome) for _, outcome in bar]
