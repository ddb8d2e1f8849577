"""Temp files of atomic writes: one naming pattern, swept at each stage's start when a killed run left them (never
while a live write holds them); files are created with the umask's mode, as open() creates them."""
from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xtlunet.cli import main
from xtlunet.utils.atomic import (PARTIAL_PATTERN, atomic_path, partial_name, sweep_partial_files, target_of,
                                  write_json, write_text)
from xtlunet.utils.lock import folder_lock

OLD = time.time() - 3600


def plant(folder: Path, name: str, age: float | None = OLD) -> Path:
    """A temp file as a killed atomic write leaves it (modified `age` ago, default an hour)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"half-written")
    if age is not None:
        os.utime(path, (age, age))
    return path


def test_one_naming_pattern(tmp_path):
    target = tmp_path / "case_0001.nii.gz"
    name = partial_name(target)
    assert PARTIAL_PATTERN.match(name) and name.startswith(".case_0001.nii.gz.") and name.endswith(".partial.nii.gz")
    assert target_of(tmp_path / name) == target and target_of(target) == target
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and PARTIAL_PATTERN.match(tmp.name) and target_of(tmp) == target
        tmp.write_text("x")
    assert target.read_text() == "x" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_failed_write_leaves_no_temp_file_and_names_the_target(tmp_path):
    with pytest.raises(OSError) as err:
        with atomic_path(tmp_path / "plans.json") as tmp:
            tmp.write_text("{")
            raise OSError(28, "No space left on device")
    assert err.value.filename == str(tmp_path / "plans.json") and not list(tmp_path.iterdir())


def test_sweep_removes_only_stale_temp_files(tmp_path):
    stale = plant(tmp_path, ".plans.json.k1ll3d00.partial.json")
    stale_old_style = plant(tmp_path, ".case.npy.ab_cd12x.partial.npy")     # a mkstemp name of earlier versions
    young = plant(tmp_path, ".case2.npy.a1b2c3d4.partial.npy", age=None)  # a write that may just have begun
    other = [plant(tmp_path, name) for name in (".hidden", "case.partial.npy", ".notes.partial", "plans.json")]
    folder = tmp_path / ".dataset.x1y2.partial"                          # a folder is never swept
    folder.mkdir()
    assert sorted(sweep_partial_files(tmp_path)) == sorted([stale, stale_old_style])
    assert not stale.exists() and young.exists() and folder.is_dir() and all(p.exists() for p in other)
    assert sweep_partial_files(tmp_path, min_age=0) == [young]


def test_sweep_never_touches_a_write_in_progress(tmp_path):
    """A temp file whose write holds its lock stays, however old; once the writer is killed it goes."""
    target = tmp_path / "checkpoint_latest.pth"
    script = ("import sys, time\nfrom xtlunet.utils.atomic import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_text('half')\n    print(tmp, flush=True)\n    time.sleep(300)\n")
    writer = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        tmp = Path(writer.stdout.readline().strip())
        os.utime(tmp, (OLD, OLD))
        assert sweep_partial_files(tmp_path, min_age=0) == [] and tmp.exists()
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert tmp.exists() and not target.exists()                     # what a kill leaves
        assert sweep_partial_files(tmp_path) == [tmp] and not tmp.exists()
    finally:
        writer.kill()
        writer.wait()


def test_a_locked_temp_file_of_this_process_is_kept(tmp_path):
    path = plant(tmp_path, ".a.json.0000beef.partial.json")
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert sweep_partial_files(tmp_path) == [] and path.exists()
    finally:
        os.close(fd)
    assert sweep_partial_files(tmp_path) == [path]


def test_first_write_into_a_folder_sweeps_it(tmp_path):
    folder = tmp_path / "compare_3d_fullres"
    stale = plant(folder, ".comparison.md.k1ll3d00.partial.md")
    write_text(folder / "comparison.md", "# table\n")
    assert not stale.exists()


def test_folder_lock_sweeps_even_fresh_temp_files(tmp_path):
    """Under the lock no other run writes there: a temp file of a just-killed run goes at once."""
    fresh = plant(tmp_path / "fold_0", ".checkpoint_latest.pth.0f0f0f0f.partial.pth", age=None)
    with folder_lock(tmp_path / "fold_0", "fold folder"):
        assert not fresh.exists()


def test_plan_rerun_removes_what_a_killed_plans_write_left(examples, capsys):
    argv = ["plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--no-pp", "--gpu-memory-gb", "0.04"]
    assert main(argv) == 0
    out = examples["preprocessed"] / "Dataset501_BrainMS"
    stale = plant(out, ".xtlunetPlans.json.k1ll3d00.partial.json")
    live = plant(out, ".fingerprint.json.11ve0000.partial.json")
    fd = os.open(live, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)                         # another process is writing it
    try:
        assert main(argv) == 0
    finally:
        os.close(fd)
    capsys.readouterr()
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_files_get_the_mode_open_gives_them(tmp_path, umask):
    before = os.umask(umask)
    try:
        write_json(tmp_path / "summary.json", {"a": 1})
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(before)
    mode = stat.S_IMODE((tmp_path / "summary.json").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
