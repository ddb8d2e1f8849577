"""Parallel map over cases: an ordered lazy iterator, and a list map with a progress bar; worker errors keep their
type. And two ways to overlap a loop's stages in threads: `read_ahead` (the next item is made while the caller works
on the current one) and `OneAtATime` (a job runs in the background while the caller goes on, one job at a time)."""
from __future__ import annotations

import itertools
import multiprocessing as mp
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing
from multiprocessing.context import BaseContext
from typing import Any, Callable, Generic, Hashable, Iterable, Iterator, TypeVar

from xtlunet.utils.console import progress_bar

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)
AHEAD_PER_WORKER = 2   # imap_cases: jobs submitted per worker process (results wait in memory until read)


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
    """(job, fn(job) or the exception it raised) in job order; with workers > 1, processes run ahead of the reader,
    at most AHEAD_PER_WORKER jobs per process (so a slow reader does not gather every result in memory).

    Closing the iterator early cancels the jobs not yet started.
    """
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, _outcome(fn, job)
        return
    workers = min(workers, len(jobs))
    with ProcessPoolExecutor(workers, mp_context=_context(start_method)) as pool:
        later = iter(jobs)
        futures = deque(pool.submit(fn, job) for job in itertools.islice(later, AHEAD_PER_WORKER * workers))
        try:
            for job in jobs:
                outcome = _result(futures.popleft())
                futures.extend(pool.submit(fn, nxt) for nxt in itertools.islice(later, 1))
                yield job, outcome
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


_END = object()


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """The items in order, each next one made in a background thread while the caller works on the current one: one
    ahead, never more. An exception of the source is raised here, at its place in the order. Closing the iterator
    early waits for the item in the making (then drops it)."""
    source = iter(items)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="xtlunet-read-ahead") as pool:
            future = pool.submit(next, source, _END)
            while (item := future.result()) is not _END:
                future = pool.submit(next, source, _END)
                yield item
    finally:   # the thread is done with the source: close it (a generator's own clean-up runs now, not at exit)
        close = getattr(source, "close", None)
        if close is not None:
            close()


class OneAtATime(Generic[K]):
    """Jobs run one at a time, each in a background thread while the caller goes on (`background`), else at once.

    `submit` first waits for the job before (so at most one is in flight: its inputs are the only ones held) and
    returns the finished jobs as (key, result or the exception it raised); `finish` waits for the last one. Both
    modes run the same jobs in the same order, so the background mode changes only when they run.
    """

    def __init__(self, background: bool = True, name: str = "xtlunet-background") -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name) if background else None
        self._pending: tuple[K, Future[Any]] | None = None

    def submit(self, key: K, fn: Callable[..., Any], *args: Any) -> list[tuple[K, Any]]:
        """Start fn(*args) (after the job before it ends); the jobs finished meanwhile, as (key, outcome)."""
        done = self.finish()
        if self._pool is None:
            return [*done, (key, _outcome(lambda a: fn(*a), args))]
        self._pending = (key, self._pool.submit(fn, *args))
        return done

    def finish(self) -> list[tuple[K, Any]]:
        """Wait for the job in flight; [(key, outcome)] of it, or [] when none was."""
        if self._pending is None:
            return []
        (key, future), self._pending = self._pending, None
        return [(key, _result(future))]

    def close(self) -> None:
        """Wait for the job in flight (its outcome is dropped: call `finish` first to have it) and stop the thread."""
        self.finish()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
