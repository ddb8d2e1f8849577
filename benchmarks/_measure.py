"""Shared measurement helpers for the benchmarks: wall time and peak memory of a whole process tree."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Sequence

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_INTERVAL_S = 0.05
PSS_INTERVAL_S = 0.5  # PSS costs ~1 ms of kernel time per 100 MB of a process's memory: sample it less often


@dataclass(frozen=True)
class Measurement:
    """Result of one measured command; unpacks as (wall_s, peak_rss_bytes, returncode, output_tail)."""

    wall_s: float
    peak_rss_bytes: int
    returncode: int
    output_tail: str
    peak_pss_bytes: int | None = None   # peak of the summed proportional set size (shared pages split), if tracked
    samples: int = 0                    # memory samples taken
    max_processes: int = 0              # most processes seen in the tree at once
    poll_cpu_s: float = 0.0             # CPU time the polling thread itself used
    cpu_s: float = 0.0                  # user + system CPU time of the command and the descendants it waited for
    machine_cpu_s: float = 0.0          # busy CPU time of the whole machine (all cores) during the run

    @property
    def other_cpu_s(self) -> float:
        """CPU time that processes outside the command (and outside the poller) used during the run."""
        return max(0.0, self.machine_cpu_s - self.cpu_s - self.poll_cpu_s)

    def __iter__(self) -> Iterator[Any]:
        """The four main fields, so that `wall, peak, rc, tail = run_measured(...)` works."""
        return iter((self.wall_s, self.peak_rss_bytes, self.returncode, self.output_tail))


def _stat_fields(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a process from /proc/PID/stat, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    rest = raw[raw.rfind(b")") + 2:].split()
    return int(rest[1]), int(rest[3])


def _rss_bytes(pid: int) -> int:
    """Resident set size of one process in bytes (0 when it is gone or a zombie)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_bytes().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class ProcessTree:
    """The pids of a command's tree: it, its descendants, and anything left in its session (orphaned workers too).

    The command must be a session leader (started with start_new_session=True), so its session id is its pid.
    /proc/PID/stat is read once per new pid, so repeated calls cost little more than listing /proc.
    """

    def __init__(self, root: int) -> None:
        """Track the tree of process `root`."""
        self.root = root
        self._known: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, session id) when first seen

    def pids(self) -> set[int]:
        """The pids in the tree now."""
        live = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for pid in self._known.keys() - live:
            del self._known[pid]
        for pid in live - self._known.keys():
            fields = _stat_fields(pid)
            if fields is not None:
                self._known[pid] = fields
        members = {self.root} | {pid for pid, (_, sid) in self._known.items() if sid == self.root}
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in self._known.items():
            children.setdefault(ppid, []).append(pid)
        todo = list(members)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in members:
                    members.add(child)
                    todo.append(child)
        return members & (live | {self.root})


def tree_pids(root: int) -> set[int]:
    """The pids of `root`'s tree now (see ProcessTree)."""
    return ProcessTree(root).pids()


def _pss_bytes(pid: int) -> int:
    """Proportional set size of one process in bytes, from /proc/PID/smaps_rollup (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def machine_busy_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot, summed over cores (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return busy / CLOCK_TICKS


def children_cpu_s() -> float:
    """User + system CPU time of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_rss_bytes(root: int) -> int:
    """The sum of RSS over a process tree (see tree_pids)."""
    return sum(_rss_bytes(pid) for pid in tree_pids(root))


class _PeakPoller(threading.Thread):
    """Polls the summed RSS (and optionally PSS) of a process tree until stopped; keeps the maxima."""

    def __init__(self, root: int, interval_s: float, pss_interval_s: float | None) -> None:
        """Start nothing yet; `root` is the pid of the command; PSS is skipped when pss_interval_s is None."""
        super().__init__(daemon=True)
        self.tree = ProcessTree(root)
        self.interval_s = interval_s
        self.pss_interval_s = pss_interval_s
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0
        self.max_processes = 0
        self.cpu_s = 0.0
        self._next_pss = 0.0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        """Take one sample of the whole tree (RSS always, PSS when its interval has passed)."""
        pids = self.tree.pids()
        self.max_processes = max(self.max_processes, len(pids))
        self.peak_rss = max(self.peak_rss, sum(_rss_bytes(pid) for pid in pids))
        if self.pss_interval_s is not None and time.monotonic() >= self._next_pss:
            self.peak_pss = max(self.peak_pss, sum(_pss_bytes(pid) for pid in pids))
            self._next_pss = time.monotonic() + self.pss_interval_s
        self.samples += 1

    def run(self) -> None:
        """Sample every interval until stop() is called."""
        start = time.thread_time()
        try:
            while True:
                self.sample()
                if self._stop_event.wait(self.interval_s):
                    return
        finally:
            self.cpu_s = time.thread_time() - start

    def stop(self) -> None:
        """Ask the thread to finish and wait for it."""
        self._stop_event.set()
        self.join()


def _drain(stream: IO[str], tail: deque[str]) -> None:
    """Read a pipe to its end, keeping the last lines (carriage-return progress bars count as lines)."""
    for line in iter(stream.readline, ""):
        for part in line.replace("\r", "\n").splitlines():
            if part.strip():
                tail.append(part)
    stream.close()


def run_measured(cmd: Sequence[str], env: Mapping[str, str] | None, *, cwd: str | Path | None = None,
                 interval_s: float = POLL_INTERVAL_S, tail_lines: int = 40,
                 timeout_s: float | None = None, pss_interval_s: float | None = PSS_INTERVAL_S) -> Measurement:
    """Run `cmd` to its end; return its wall time, the peak summed RSS of its process tree, exit code and output tail.

    The summed PSS is polled every `pss_interval_s` (None: not at all), so its peak may miss short spikes.
    """
    tail: deque[str] = deque(maxlen=tail_lines)
    cpu_before, machine_before = children_cpu_s(), machine_busy_cpu_s()
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    poller = _PeakPoller(proc.pid, interval_s, pss_interval_s)
    poller.start()
    reader = threading.Thread(target=_drain, args=(proc.stdout, tail), daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        returncode = proc.wait()
        tail.append(f"[killed after {timeout_s:g} s]")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        wall = time.perf_counter() - start
        machine_cpu = machine_busy_cpu_s() - machine_before
        poller.stop()
    reader.join(timeout=5)
    return Measurement(wall, poller.peak_rss, returncode, "\n".join(tail),
                       poller.peak_pss if pss_interval_s is not None else None, poller.samples, poller.max_processes,
                       poller.cpu_s, children_cpu_s() - cpu_before, machine_cpu)


def run_or_exit(cmd: Sequence[str], env: Mapping[str, str] | None, what: str, *, cwd: str | Path | None = None,
                timeout_s: float | None = None, tail_lines: int = 60) -> Measurement:
    """run_measured; when the command fails (non-zero exit, timeout) exit with it and the tail of its output."""
    m = run_measured([str(c) for c in cmd], env, cwd=cwd, timeout_s=timeout_s, tail_lines=tail_lines)
    if m.returncode != 0:
        print(f"\n{what} failed (exit {m.returncode}): {' '.join(map(str, cmd))}\nlast output:\n{m.output_tail}",
              file=sys.stderr, flush=True)
        sys.exit(1)
    return m


def add_common_arguments(p: argparse.ArgumentParser, venv: Path, busy_fraction: float, what: str | None, *,
                         wait_idle_s: float = 120.0, timeout_s: float = 1800.0) -> None:
    """Options every nnU-Net side-by-side script shares: venv, work folder, idle wait, timeout, JSON, driver.

    The hidden `--_driver WHAT SPEC` option is added unless `what` is None (a script without a driver).
    """
    p.add_argument("--nnunet-venv", type=Path, default=venv,
                   help="virtual environment with nnU-Net v2, created when missing (benchmarks/.venv-nnunet)")
    p.add_argument("--work", type=Path, default=None, help="work folder (kept); default: a temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    p.add_argument("--wait-idle", type=float, default=wait_idle_s, metavar="SECONDS",
                   help=f"before each timed run wait up to this long for an idle machine (< {busy_fraction:g} "
                        f"cores busy over 2 s); 0: do not wait ({wait_idle_s:g})")
    p.add_argument("--timeout", type=float, default=timeout_s,
                   help=f"seconds before a command is killed ({timeout_s:g})")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    if what is not None:
        p.add_argument("--_driver", nargs=2, metavar=(what, "SPEC"), help=argparse.SUPPRESS)


def parse_patch(p: argparse.ArgumentParser, patch: list[str]) -> list[int] | None:
    """--patch: three positive integers, or 'plan' (None: keep the plan's patch)."""
    if patch == ["plan"]:
        return None
    try:
        out = [int(v) for v in patch]
    except ValueError:
        p.error("--patch takes three integers or 'plan'")
    if len(out) != 3 or min(out) < 1:
        p.error("--patch takes three positive integers (z y x, in the plan's transposed axis order)")
    return out


def machine_info() -> dict[str, Any]:
    """CPU count, Python version and platform of this machine, for a results document."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_results(path: Path, doc: Mapping[str, Any]) -> None:
    """Write the results document as JSON and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")


def release_work(work: Path, given: Path | None, keep: bool) -> None:
    """Remove a temporary work folder unless it was given or --keep asked to keep it."""
    if given is None and not keep:
        shutil.rmtree(work, ignore_errors=True)
    elif given is None:
        print(f"kept {work}")
