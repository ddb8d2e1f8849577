"""Parallel map over cases with a tqdm bar; worker errors surface as the original XtlunetError."""
from __future__ import annotations

import multiprocessing as mp
from typing import Callable, Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def map_cases(fn: Callable[[T], R], jobs: Iterable[T], num_workers: int = 1, desc: str = "cases") -> list[R]:
    """Apply fn to each job (in order) in `num_workers` processes, showing a progress bar."""
    jobs = list(jobs)
    if num_workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, unit="case", leave=False)]
    ctx = mp.get_context("spawn" if mp.get_start_method(allow_none=True) == "spawn" else "fork")
    with ctx.Pool(min(num_workers, len(jobs))) as pool:
        return list(tqdm(pool.imap(fn, jobs), total=len(jobs), desc=desc, unit="case", leave=False))
