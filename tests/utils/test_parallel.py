"""imap_cases and map_cases: results in job order, failures handed back (imap) or raised (map), 1 and 2 workers."""
from __future__ import annotations

import os
import time

import pytest

from xtlunet.errors import XtlunetError
from xtlunet.utils.parallel import imap_cases, map_cases


def _square_or_fail(x: int) -> int:
    """x², raising an XtlunetError for 3 and a ValueError for 5; later jobs finish first."""
    time.sleep(0.02 * (6 - x))
    if x == 3:
        raise XtlunetError("case 3 is broken", path=f"case_{x}", fix="repair it")
    if x == 5:
        raise ValueError("five")
    return x * x


def _pid(_: int) -> int:
    """The id of the process that ran the job."""
    time.sleep(0.05)
    return os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_imap_cases_keeps_order_and_hands_back_failures(workers: int) -> None:
    jobs = list(range(7))
    out = list(imap_cases(_square_or_fail, iter(jobs), workers))
    assert [job for job, _ in out] == jobs
    for job, result in out:
        if job == 3:
            assert isinstance(result, XtlunetError)
            assert (result.what, result.path, result.fix) == ("case 3 is broken", "case_3", "repair it")
        elif job == 5:
            assert isinstance(result, ValueError) and str(result) == "five"
        else:
            assert result == job * job


def test_imap_cases_runs_in_workers_only_when_asked() -> None:
    assert {pid for _, pid in imap_cases(_pid, range(4), 1)} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in imap_cases(_pid, range(4), 2)}
    assert [pid for _, pid in imap_cases(_pid, [0], 2)] == [os.getpid()]   # one job: no process started


@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_imap_cases_start_methods(start_method: str | None) -> None:
    out = list(imap_cases(_square_or_fail, [0, 1, 2], 2, start_method))
    assert [r for _, r in out] == [0, 1, 4]


def test_imap_cases_of_nothing() -> None:
    assert list(imap_cases(_square_or_fail, [], 2)) == []


def test_imap_cases_closed_early_stops() -> None:
    it = imap_cases(_square_or_fail, range(7), 2)
    assert next(it) == (0, 0)
    it.close()
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("workers", [1, 2])
def test_map_cases_results_in_order(workers: int) -> None:
    assert map_cases(_square_or_fail, [0, 1, 2, 4, 6], workers) == [0, 1, 4, 16, 36]


@pytest.mark.parametrize("workers", [1, 2])
def test_map_cases_raises_the_workers_error(workers: int) -> None:
    with pytest.raises(XtlunetError) as info:
        map_cases(_square_or_fail, range(7), workers)
    assert (info.value.what, info.value.path, info.value.fix) == ("case 3 is broken", "case_3", "repair it")
    with pytest.raises(ValueError, match="five"):
        map_cases(_square_or_fail, [4, 5, 6], workers)
