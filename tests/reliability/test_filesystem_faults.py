"""File-system faults end in one line naming the data root's variable, the path and the fix (exit 2): a full disk,
a read-only or unwritable root, a root that is a file. Finished cases stay; no temp file stays."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from xtlunet.cli import main
from xtlunet.errors import XtlunetError, os_error_to_user_error

BRAIN = "Dataset501_BrainMS"
TINY = ["--gpu-memory-gb", "0.04", "-np", "1"]


def error_lines(err: str) -> list[str]:
    """Lines of stderr carrying an error."""
    return [line for line in err.splitlines() if "error:" in line]


def temp_files(root: Path) -> list[Path]:
    """Temp files of atomic writes under root."""
    return [p for p in root.rglob("*") if ".partial" in p.name]


# ---------------------------------------------------------------- the mapping

@pytest.mark.parametrize("code, what, fix", [
    (errno.ENOSPC, "no space left on the disk (XTLUNET_results)", "free space on the disk of XTLUNET_results="),
    (errno.EDQUOT, "disk quota exceeded (XTLUNET_results)", "free space in your quota"),
    (errno.EROFS, "cannot write: the file system is read-only (XTLUNET_results)", "make XTLUNET_results="),
    (errno.EACCES, "permission denied (XTLUNET_results)", "readable and writable for you"),
])
def test_os_error_names_the_root_variable_and_the_real_file(roots, code, what, fix):
    tmp = roots["results"] / "D" / "fold_0" / ".checkpoint_latest.pth.0a1b2c3d.partial.pth"
    err = os_error_to_user_error(OSError(code, os.strerror(code), str(tmp)))
    line = err.one_line()
    assert line.startswith(what) and fix in line and "or point XTLUNET_results at another folder" in line
    assert err.path == str(roots["results"] / "D" / "fold_0" / "checkpoint_latest.pth")   # the target, not the temp


def test_os_error_outside_the_roots_and_programming_errors(roots, tmp_path):
    err = os_error_to_user_error(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x" / "y")))
    assert err.one_line().startswith("permission denied [") and "(or write elsewhere)" in err.one_line()
    assert os_error_to_user_error(FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "gone"))) is None
    assert os_error_to_user_error(NotADirectoryError(errno.ENOTDIR, "Not a directory")) is None
    assert os_error_to_user_error(OSError(errno.EEXIST, "File exists", str(tmp_path))) is None  # nothing in the way


def test_the_innermost_root_is_named(roots, monkeypatch):
    monkeypatch.setenv("XTLUNET_preprocessed", str(roots["raw"] / "pre"))
    err = os_error_to_user_error(OSError(errno.ENOSPC, "full", str(roots["raw"] / "pre" / "D" / "x.npy")))
    assert "(XTLUNET_preprocessed)" in err.one_line()


def test_a_programming_oserror_keeps_its_traceback(roots, monkeypatch):
    import xtlunet.cli as cli

    def broken(_):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere/at/all")

    monkeypatch.setattr(cli, "_cmd_example", broken)
    with pytest.raises(FileNotFoundError):
        main(["example", "brain-ms"])


# ---------------------------------------------------------------- a root that is a file (for real)

@pytest.mark.parametrize("kind, argv", [
    ("raw", ["example", "brain-ms", "--cases", "2"]),
    ("preprocessed", ["plan-and-preprocess", "-d", "501", *TINY]),
    ("results", ["predict", "-i", "in", "-o", "out", "-d", "501", "-c", "3d_fullres"]),
    ("results", ["compare", "-d", "501", "-c", "3d_fullres", "--arms", "A", "B"]),
])
def test_a_root_that_is_a_file_is_named(examples, tmp_path, monkeypatch, capsys, kind, argv):
    afile = tmp_path / f"{kind}_is_a_file"
    afile.write_text("not a folder")
    monkeypatch.setenv(f"XTLUNET_{kind}", str(afile))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and error_lines(err) == [
        f"xtlunet {argv[0]}: error: XTLUNET_{kind} is a file, not a folder [{afile}] — fix: point XTLUNET_{kind} "
        "at a folder"]


def test_a_root_under_a_file_is_named(examples, tmp_path, monkeypatch, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("XTLUNET_preprocessed", str(afile / "preprocessed"))
    assert main(["plan-and-preprocess", "-d", "501", *TINY]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and error_lines(err) == [
        f"xtlunet plan-and-preprocess: error: XTLUNET_preprocessed is not a folder: {afile} is a file "
        f"[{afile / 'preprocessed'}] — fix: point XTLUNET_preprocessed at a folder"]


# ---------------------------------------------------------------- a full disk mid-run

def test_disk_full_during_preprocessing_keeps_finished_cases(examples, monkeypatch, capsys):
    real_save, calls = np.save, []

    def save_until_full(file, arr, *args, **kwargs):
        calls.append(1)
        if len(calls) > 4:   # two cases (image + segmentation) fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")   # as write() raises it: no file name
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_until_full)
    assert main(["plan-and-preprocess", "-d", "501", "-c", "3d_fullres", *TINY]) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    folder = examples["preprocessed"] / BRAIN / "xtlunetPlans_3d_fullres"
    assert "Traceback" not in err and len(lines) == 1
    assert lines[0].startswith("xtlunet plan-and-preprocess: error: no space left on the disk (XTLUNET_preprocessed) "
                               f"[{folder}/") and ".partial" not in lines[0]
    assert f"fix: free space on the disk of XTLUNET_preprocessed={examples['preprocessed']}" in lines[0]
    assert "finished cases are kept" in lines[0]
    assert not temp_files(examples["preprocessed"])
    done = sorted(folder.glob("*.json"))
    assert len(done) == 2
    for meta in done:                                     # what finished is complete
        assert np.load(folder / meta.name.replace(".json", ".npy")).ndim == 4
        json.loads(meta.read_text())
    monkeypatch.setattr(np, "save", real_save)            # space freed: the re-run finishes the rest
    assert main(["plan-and-preprocess", "-d", "501", "-c", "3d_fullres", *TINY]) == 0
    assert len(list(folder.glob("brainms_*.json"))) == 5


# ---------------------------------------------------------------- a read-only or unwritable root

def _deny_writes_under(monkeypatch: pytest.MonkeyPatch, root: Path, code: int) -> None:
    """Make creating folders and files under root fail with `code`, as a read-only or foreign root does."""
    real_mkdir, real_open = os.mkdir, os.open

    def under(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(root)

    def mkdir(path, *args, **kwargs):
        if under(path) and not os.path.isdir(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


@pytest.mark.parametrize("code, what", [(errno.EACCES, "permission denied"),
                                        (errno.EROFS, "cannot write: the file system is read-only")])
def test_unwritable_preprocessed_root(examples, monkeypatch, capsys, code, what):
    root = examples["preprocessed"]
    if code == errno.EACCES and os.geteuid() != 0:
        root.chmod(0o555)                                  # for real where permissions bite (not as root)
    else:
        _deny_writes_under(monkeypatch, root, code)
    try:
        assert main(["plan-and-preprocess", "-d", "501", "-c", "3d_fullres", *TINY]) == 2
    finally:
        root.chmod(0o755)
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert "Traceback" not in err and len(lines) == 1
    assert lines[0].startswith(f"xtlunet plan-and-preprocess: error: {what} (XTLUNET_preprocessed) [{root}/")
    assert f"— fix: make XTLUNET_preprocessed={root}" in lines[0] and "or point XTLUNET_preprocessed at" in lines[0]
    assert not [p for p in root.rglob("*") if p.is_file()]


def test_user_error_from_data_root_is_an_xtlunet_error(roots, tmp_path, monkeypatch):
    from xtlunet.paths import results_root

    afile = tmp_path / "f"
    afile.write_text("")
    monkeypatch.setenv("XTLUNET_results", str(afile))
    with pytest.raises(XtlunetError, match="XTLUNET_results is a file, not a folder"):
        results_root()
    monkeypatch.delenv("XTLUNET_results")
    monkeypatch.setenv("nnUNet_results", str(afile))
    with pytest.raises(XtlunetError, match="nnUNet_results is a file, not a folder"):
        results_root()


def test_torch_checkpoint_on_a_full_disk_is_an_oserror_naming_it(roots, monkeypatch):
    """save_torch writes through a Python file, so a full disk surfaces as OSError (torch.save to a path raises
    an opaque RuntimeError from its C++ writer instead)."""
    import builtins

    import torch

    import xtlunet.utils.atomic as atomic

    class FullDisk:
        """A file on a disk with no space left."""

        def __init__(self, path, mode):
            self.fh = builtins.open(path, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(atomic, "open", FullDisk, raising=False)
    target = roots["results"] / "D" / "fold_0" / "checkpoint_latest.pth"
    with pytest.raises(OSError) as failure:
        atomic.save_torch(target, {"network": torch.zeros(1000)})
    line = os_error_to_user_error(failure.value).one_line()
    assert line.startswith(f"no space left on the disk (XTLUNET_results) [{target}]")
    assert not list(target.parent.iterdir())
