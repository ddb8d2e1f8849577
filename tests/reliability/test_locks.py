"""Folder locks (xtlunet/utils/lock.py): a second run of one fold (or into one predict output folder) stops at once
naming the holder; a stale lock of a dead process on this host is taken over; another host's lock never is."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.conftest import use_roots
from xtlunet.cli import main
from xtlunet.errors import XtlunetError
from xtlunet.utils.lock import LOCK_NAME, LockRecord, _process_start, folder_lock

MODEL = "ScratchTrainer__xtlunetPlans__3d_fullres"
TRAIN = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--device", "cpu", "--no-final-validation"]


@pytest.fixture
def live_process():
    """A process that stays alive for the test (stands in for another xtlunet run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant_lock(folder: Path, pid: int, host: str | None = None, pid_start: str | None = "auto") -> LockRecord:
    """A lock file in folder, as a run with this pid (on this host by default) leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    record = LockRecord(pid, host or socket.gethostname(), "2024-01-02 03:04:05", "xtlunet train 501 3d_fullres 0",
                        "feedfacecafebeef", _process_start(pid) if pid_start == "auto" else pid_start)
    (folder / LOCK_NAME).write_text(json.dumps(asdict(record)))
    return record


# ---------------------------------------------------------------- the lock itself

def test_lock_is_held_during_the_block_and_removed_after(tmp_path):
    folder = tmp_path / "fold_0"
    with folder_lock(folder, "fold folder") as lock:
        record = LockRecord.parse(lock.read_text())
        assert lock == folder / LOCK_NAME and record.pid == os.getpid() and record.host == socket.gethostname()
        with pytest.raises(XtlunetError) as err:      # a second holder, even in this process, is refused
            with folder_lock(folder, "fold folder"):
                pass
        assert f"pid {os.getpid()}" in str(err.value) and str(lock) in str(err.value)
        (folder / "checkpoint.pth").write_text("x")
    assert not lock.exists() and (folder / "checkpoint.pth").is_file()


def test_second_run_is_refused_naming_the_lock_and_its_holder(tmp_path, live_process):
    folder = tmp_path / "out"
    plant_lock(folder, live_process.pid)
    with pytest.raises(XtlunetError) as err:
        with folder_lock(folder, "predict output folder"):
            pytest.fail("the block must not run")
    line = err.value.one_line()
    assert line.startswith("predict output folder is in use by another xtlunet run")
    for part in (f"pid {live_process.pid}", f"host {socket.gethostname()}", "started 2024-01-02 03:04:05",
                 str(folder / LOCK_NAME), f"kill {live_process.pid}"):
        assert part in line, part
    assert "\n" not in line and (folder / LOCK_NAME).is_file()    # the holder keeps its lock


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path, caplog):
    folder = tmp_path / "fold_1"
    plant_lock(folder, dead_pid())
    with caplog.at_level("WARNING", logger="xtlunet"):
        with folder_lock(folder, "fold folder") as lock:
            assert LockRecord.parse(lock.read_text()).pid == os.getpid()
    assert "took over the lock" in caplog.text and str(folder / LOCK_NAME) in caplog.text
    assert not (folder / LOCK_NAME).exists()


def test_lock_of_a_reused_pid_is_stale(tmp_path, live_process):
    """The pid is alive, but it is another process than the one that made the lock (its start time differs)."""
    folder = tmp_path / "fold_2"
    plant_lock(folder, live_process.pid, pid_start="1")
    with folder_lock(folder, "fold folder") as lock:
        assert LockRecord.parse(lock.read_text()).pid == os.getpid()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    folder = tmp_path / "fold_3"
    plant_lock(folder, dead_pid(), host="some-other-node")
    with pytest.raises(XtlunetError) as err:
        with folder_lock(folder, "fold folder"):
            pass
    line = err.value.one_line()
    assert "host some-other-node" in line and f"rm {folder / LOCK_NAME}" in line
    assert (folder / LOCK_NAME).is_file()


def test_unreadable_lock_is_refused_with_how_to_remove_it(tmp_path):
    folder = tmp_path / "fold_4"
    folder.mkdir()
    (folder / LOCK_NAME).write_text("")
    with pytest.raises(XtlunetError, match="lock record is unreadable.*rm "):
        with folder_lock(folder, "fold folder"):
            pass


def test_refused_run_leaves_no_folder_behind(tmp_path):
    folder = tmp_path / "results" / "Dataset" / "model" / "fold_0"
    with pytest.raises(RuntimeError):
        with folder_lock(folder, "fold folder"):
            raise RuntimeError("refused after the lock was taken")
    assert not (tmp_path / "results").exists()


def test_lock_on_a_file_is_refused(tmp_path):
    path = tmp_path / "out"
    path.write_text("x")
    with pytest.raises(XtlunetError, match="is a file, not a folder"):
        with folder_lock(path, "predict output folder"):
            pass


def test_concurrent_takeovers_of_one_stale_lock_leave_one_holder(tmp_path):
    """Four processes find the same stale lock at once: exactly one of them holds the folder at any time."""
    folder = tmp_path / "fold_0"
    plant_lock(folder, dead_pid())
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from xtlunet.errors import XtlunetError\n"
        "from xtlunet.utils.lock import folder_lock\n"
        "folder = Path(sys.argv[1])\n"
        "while not (folder / 'go').exists(): time.sleep(0.001)\n"
        "try:\n"
        "    with folder_lock(folder, 'fold folder'):\n"
        "        (folder / f'holder_{os.getpid()}').write_text('x')\n"
        "        time.sleep(1.0)\n"
        "        print(len(list(folder.glob('holder_*'))))\n"
        "except XtlunetError:\n"
        "    print('refused')\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    time.sleep(1.5)  # every process is waiting for the start signal
    (folder / "go").write_text("")
    outputs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outputs.count("1") >= 1 and all(o in ("1", "refused") for o in outputs), outputs
    assert not (folder / LOCK_NAME).exists()


# ---------------------------------------------------------------- train and predict take the locks

def _fold(roots: dict[str, Path], fold: str = "0") -> Path:
    return roots["results"] / "Dataset501_BrainMS" / MODEL / f"fold_{fold}"


def test_second_training_of_a_fold_stops_at_once(prepared_roots, tmp_path, monkeypatch, capsys, live_process):
    roots = {**prepared_roots, "results": tmp_path / "results"}
    use_roots(monkeypatch, roots)
    record = plant_lock(_fold(roots), live_process.pid)
    t0 = time.time()
    assert main(["train", "501", "3d_fullres", "0", *TRAIN]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert "Traceback" not in err and len(lines) == 1
    assert lines[0].startswith(f"xtlunet train: error: fold folder is in use by another xtlunet run (pid "
                               f"{live_process.pid} on host {record.host}, started {record.started}")
    assert str(_fold(roots) / LOCK_NAME) in lines[0] and time.time() - t0 < 60
    assert sorted(p.name for p in _fold(roots).iterdir()) == [LOCK_NAME]      # nothing of this run was written


@pytest.mark.slow
def test_train_takes_over_a_stale_lock_then_predict_refuses_a_held_output(prepared_roots, tmp_path, monkeypatch,
                                                                          capsys, live_process):
    roots = {**prepared_roots, "results": tmp_path / "results"}
    use_roots(monkeypatch, roots)
    plant_lock(_fold(roots), dead_pid())
    assert main(["-q", "train", "501", "3d_fullres", "0", *TRAIN]) == 0
    err = capsys.readouterr().err
    assert "took over the lock" in err and "epoch 0" not in err           # -q hides the training bar
    assert (_fold(roots) / "checkpoint_final.pth").is_file() and not (_fold(roots) / LOCK_NAME).exists()

    out = tmp_path / "pred"
    plant_lock(out, live_process.pid)
    src = roots["raw"] / "Dataset501_BrainMS" / "imagesTs"
    argv = ["predict", "-i", str(src), "-o", str(out), "-d", "501", "-c", "3d_fullres", "--no-tta", "--device", "cpu"]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "predict output folder is in use by another xtlunet run" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    live_process.kill()
    live_process.wait()                                                    # its run is gone: the lock is stale
    assert main(argv) == 0
    assert list(out.glob("*.nii.gz")) and not (out / LOCK_NAME).exists()
