"""Fault scenarios: SIGKILL during preprocessing, training and prediction, then a re-run; a data-augmentation worker
crashing; checkpoints read with weights_only=True and refused against another plan."""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase

from tests.bad_inputs_helpers import (BRAIN, PROSTATE, cli_env, error_lines, partial_files, set_roots, snapshot,
                                      xtlunet_cmd)
from xtlunet.cli import main
from xtlunet.dataset.io import read_image
from xtlunet.plans import Plans

pytestmark = pytest.mark.slow  # end-to-end runs: `pytest -m "not slow"` leaves them out

TRAIN = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--device", "cpu", "--no-final-validation"]
MODEL = "ScratchTrainer__xtlunetPlans__3d_fullres"


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, limit: float = 240) -> None:
    """SIGKILL proc as soon as ready() holds; fail if it ends first."""
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.005)
    err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    proc.kill()
    pytest.fail(f"{what}: the process ended (code {proc.poll()}) before it could be killed\n{err}")


def plant_partial(folder: Path, name: str) -> Path:
    """A temp file as a kill during an atomic write leaves it (.NAME.XXXX.partial.EXT), unless the kill left one."""
    existing = [p for p in folder.iterdir() if ".partial" in p.name]
    if existing:
        return existing[0]
    path = folder / f".{name}.killed.partial{''.join(Path(name).suffixes)}"
    path.write_bytes(b"\x93NUMPY half-written")
    return path


def copy_prepared(prepared: dict[str, Path], tmp: Path, *names: str) -> Path:
    """A private preprocessed root holding copies of planned datasets."""
    pre = tmp / "preprocessed"
    for name in names:
        shutil.copytree(prepared["preprocessed"] / name, pre / name)
    return pre


# ---------------------------------------------------------------- preprocessing


def test_sigkill_during_preprocessing_then_rerun(tmp_path, monkeypatch, capsys):
    from xtlunet.dataset.examples import make_example

    n = 12
    roots = {"raw": tmp_path / "raw", "preprocessed": tmp_path / "preprocessed", "results": tmp_path / "results"}
    make_example("brain-ms", roots["raw"], cases=n, seed=1)
    folder = roots["preprocessed"] / BRAIN / "xtlunetPlans_3d_fullres"

    def committed() -> list[Path]:
        """Cases whose .json (written last, the commit mark) exists."""
        return [p for p in folder.glob("brainms_*.json")] if folder.is_dir() else []

    proc = subprocess.Popen(xtlunet_cmd("-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "-np", "1",
                                        "--gpu-memory-gb", "0.04"),
                            env=cli_env(roots), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, lambda: len(committed()) >= 2, "plan-and-preprocess")
    done = {p.name: p.stat().st_mtime_ns for p in committed()}
    assert 2 <= len(done) < n
    for meta in done:                                   # what a killed run committed is complete
        np.load(folder / meta.replace(".json", ".npy"))
    stale = plant_partial(folder, "brainms_0011.npy")

    set_roots(monkeypatch, roots["raw"], roots["preprocessed"], roots["results"])
    assert main(["plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "-np", "1", "--gpu-memory-gb", "0.04"]) == 0
    capsys.readouterr()
    assert not stale.exists() and not partial_files([roots["preprocessed"]])
    cases = sorted(p.name[:-5] for p in folder.glob("brainms_*.json"))
    assert len(cases) == n
    for case in cases:
        props = json.loads((folder / f"{case}.json").read_text())
        data, seg = np.load(folder / f"{case}.npy"), np.load(folder / f"{case}_seg.npy")
        assert list(data.shape[1:]) == props["shape_after_resample"] == list(seg.shape)
        assert np.isfinite(data).all()
    # the cases committed before the kill were kept, not redone
    assert {name: (folder / name).stat().st_mtime_ns for name in done} == done


# ---------------------------------------------------------------- training


def test_sigkill_during_training_then_continue_redoes_only_lost_epochs(trained_roots):
    """The basic resume is tests/training/test_train.py::test_sigkill_then_continue_finishes_all_epochs (final
    records 0..5); this one checks that the resumed run logs exactly the epochs after the checkpoint, keeps the
    restored records unchanged, and redoes the epochs lost since the last checkpoint (save every 2 epochs)."""
    epochs = 6
    fold = trained_roots["results"] / PROSTATE / "ScratchTrainer__xtlunetPlans__3d_roi" / "fold_4"
    latest = fold / "checkpoint_latest.pth"
    cmd = xtlunet_cmd("train", "502", "3d_roi", "4", "--epochs", str(epochs), "--iters-per-epoch", "2",
                      "--val-iters", "1", "--save-every", "2", "--device", "cpu", "--no-final-validation")
    proc = subprocess.Popen(cmd, env=cli_env(trained_roots), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def past_a_checkpoint() -> bool:
        return latest.is_file() and torch.load(latest, weights_only=True)["epoch"] >= 2

    kill_when(proc, past_a_checkpoint, "train")
    ck = torch.load(latest, map_location="cpu", weights_only=True)       # a checkpoint loads with weights_only=True
    done = int(ck["epoch"])
    assert 2 <= done < epochs and not (fold / "checkpoint_final.pth").exists()
    out = subprocess.run([*cmd, "--continue"], env=cli_env(trained_roots), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    log = (fold / "training_log.txt").read_text()
    marker = f"continuing from checkpoint_latest.pth at epoch {done}"
    assert log.count("continuing from") == 1 and marker in log
    resumed = [int(e) for e in re.findall(r": epoch (\d+):", log.split(marker, 1)[1])]
    assert resumed == list(range(done, epochs))                       # exactly the missing epochs, once each
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert [int(r["epoch"]) for r in final["progress"]] == list(range(epochs))
    # the restored records are carried unchanged (compared as JSON: NaN metrics stay equal)
    assert json.dumps(final["progress"][:done]) == json.dumps(ck["progress"])


def _truncated_training_case(pre: Path, header_only: bool) -> str:
    """Truncate the data array of one training case of fold 0; returns its id."""
    splits = json.loads((pre / BRAIN / "splits_final.json").read_text())
    case = sorted(splits[0]["train"])[0]
    path = pre / BRAIN / "xtlunetPlans_3d_fullres" / f"{case}.npy"
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(128 if header_only else size // 2)
    return case


def _with_splits(pre: Path) -> None:
    """Make the 5-fold split of the brain copy, as the first training run would."""
    from xtlunet.training.splits import load_or_create_splits

    ids = json.loads((pre / BRAIN / "xtlunetPlans_3d_fullres" / "configuration.json").read_text())["cases"]
    load_or_create_splits(pre / BRAIN, ids, None, {})


def test_truncated_case_array_is_named_before_workers_start(prepared_roots, tmp_path):
    pre = copy_prepared(prepared_roots, tmp_path, BRAIN)
    _with_splits(pre)
    case = _truncated_training_case(pre, header_only=False)
    roots = {"raw": prepared_roots["raw"], "preprocessed": pre, "results": tmp_path / "results"}
    start = time.time()
    out = subprocess.run(xtlunet_cmd("train", "501", "3d_fullres", "0", *TRAIN[:-1]), env=cli_env(
        roots, XTLUNET_n_proc_DA="1"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and time.time() - start < 120, out.stderr[-3000:]
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"cannot load preprocessed case {case}" in lines[0] and f"{case}.npy" in lines[0]
    assert "re-run xtlunet plan-and-preprocess" in lines[0]
    assert not (tmp_path / "results").exists()
    # the fix works: a re-run (no --overwrite) redoes the damaged case only
    folder = pre / BRAIN / "xtlunetPlans_3d_fullres"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json") if p.name != "configuration.json"}
    out = subprocess.run(xtlunet_cmd("-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--gpu-memory-gb",
                                     "0.04"), env=cli_env(roots), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert np.load(folder / f"{case}.npy").ndim == 4
    assert [n for n, t in stamps.items() if (folder / n).stat().st_mtime_ns != t] == [f"{case}.json"]


def test_augmentation_worker_crash_names_the_case(prepared_roots, tmp_path):
    """A case's array truncated while training runs: the background worker that maps it dies (SIGBUS); training
    stops with an error naming the case instead of batchgenerators' 'workers are no longer alive' (or a hang)."""
    pre = copy_prepared(prepared_roots, tmp_path, BRAIN)
    _with_splits(pre)
    roots = {"raw": prepared_roots["raw"], "preprocessed": pre, "results": tmp_path / "results"}
    fold = roots["results"] / BRAIN / MODEL / "fold_0"
    cmd = xtlunet_cmd("train", "501", "3d_fullres", "0", "--epochs", "200", "--iters-per-epoch", "2", "--val-iters",
                      "1", "--save-every", "1", "--device", "cpu", "--no-final-validation")
    proc = subprocess.Popen(cmd, env=cli_env(roots, XTLUNET_n_proc_DA="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (fold / "checkpoint_latest.pth").is_file():
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before the case could be damaged"
        case = _truncated_training_case(pre, header_only=True)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1 and f"cannot load preprocessed case {case}" in lines[0], err[-3000:]
    assert "plan-and-preprocess" in lines[0]


class DiesMidBatch(SlimDataLoaderBase):
    """A batch loader whose worker dies half-way through sending a batch (as on SIGBUS or the OOM killer)."""

    def generate_train_batch(self) -> dict:
        queue = multiprocessing.current_process()._args[0]    # the worker's result queue (the producer's argument)
        time.sleep(0.2)                                        # the results thread is waiting in queue.get by now
        queue._writer._send(struct.pack("!i", 1 << 20) + bytes(1000))    # a batch's header and 1000 of its bytes
        os.kill(os.getpid(), signal.SIGKILL)
        return {}


def test_worker_dying_mid_batch_stops_the_augmenter():
    """batchgenerators' results thread blocks for good on the half-sent batch, so it never sees the death and
    MultiThreadedAugmenter waits forever; xtlunet's Augmenter notices the dead worker and raises."""
    from xtlunet.training.tasks.common import Augmenter

    aug = Augmenter(DiesMidBatch(None, 1), None, 1, num_cached_per_queue=1, seeds=[0], timeout=60)
    outcome: list[str] = []

    def consume() -> None:
        try:
            next(aug)
            outcome.append("batch")
        except RuntimeError as exc:
            outcome.append(str(exc))

    start = time.time()
    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    reader.join(30)
    assert outcome and "no longer alive" in outcome[0], "the augmenter hung on a dead worker"
    assert time.time() - start < 15 and not aug._processes


# ---------------------------------------------------------------- prediction


@pytest.fixture(scope="module")
def brain_model(prepared_roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Roots with a one-fold brain model, trained once for this module (private preprocessed copy)."""
    base = tmp_path_factory.mktemp("faults_model")
    roots = {"raw": prepared_roots["raw"], "preprocessed": copy_prepared(prepared_roots, base, BRAIN),
             "results": base / "results"}
    with pytest.MonkeyPatch.context() as mp:
        set_roots(mp, roots["raw"], roots["preprocessed"], roots["results"])
        assert main(["-q", "train", "501", "3d_fullres", "0", *TRAIN]) == 0
    return roots


def test_sigkill_during_predict_then_rerun(brain_model, example_cache, tmp_path, monkeypatch, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for f in (example_cache / BRAIN / "imagesTs").glob("*.nii.gz"):      # three cases
        shutil.copy(f, inp / f.name)
    cases = sorted({f.name[:-12] for f in inp.glob("*_0000.nii.gz")})
    argv = ["predict", "-i", str(inp), "-o", str(out), "-d", "501", "-c", "3d_fullres", "--no-tta", "--step-size", "1",
            "--device", "cpu"]

    def written() -> list[Path]:
        return sorted(out.glob("brainms_*.nii.gz")) if out.is_dir() else []

    proc = subprocess.Popen(xtlunet_cmd(*argv), env=cli_env(brain_model), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    kill_when(proc, lambda: len(written()) >= 1, "predict")
    before = {p.name: p.stat().st_mtime_ns for p in written()}
    assert 1 <= len(before) < len(cases)
    for p in written():                                  # what the killed run wrote is complete
        read_image(p)
    stale = plant_partial(out, f"{cases[-1]}.nii.gz")

    set_roots(monkeypatch, brain_model["raw"], brain_model["preprocessed"], brain_model["results"])
    assert main(argv) == 0
    assert f"{len(before)} already there" in capsys.readouterr().out
    assert not stale.exists() and not partial_files([out])
    assert [p.name for p in written()] == [f"{c}.nii.gz" for c in cases]
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before    # skipped, not redone


# ---------------------------------------------------------------- checkpoints and plans


def test_checkpoint_loads_weights_only_and_is_bound_to_its_plan(brain_model, tmp_path, monkeypatch, capsys):
    roots = {k: tmp_path / k for k in ("preprocessed", "results")}
    shutil.copytree(brain_model["preprocessed"], roots["preprocessed"])
    shutil.copytree(brain_model["results"], roots["results"])
    set_roots(monkeypatch, brain_model["raw"], roots["preprocessed"], roots["results"])
    model = roots["results"] / BRAIN / MODEL
    ck = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    plans = Plans.load(model / "plans.json")
    assert ck["plans_identity"] == plans.identity() and ck["plans_name"] == "xtlunetPlans"
    assert isinstance(ck["network"], dict) and all(isinstance(v, torch.Tensor) for v in ck["network"].values())

    # re-planned with another budget, then --continue: refused, the model folder untouched
    assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--gpu-memory-gb", "0.3",
                 "--no-pp"]) == 0
    assert Plans.load(roots["preprocessed"] / BRAIN / "xtlunetPlans.json").identity() != plans.identity()
    capsys.readouterr()
    before = snapshot([roots["results"]])
    assert main(["train", "501", "3d_fullres", "0", "--continue", *TRAIN]) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err
    assert "checkpoint was trained with a different plan" in lines[0] and "fold_0/checkpoint_" in lines[0]
    assert snapshot([roots["results"]]) == before

    # predict with a model folder whose plans.json was edited: refused
    edited = json.loads((model / "plans.json").read_text())
    edited["configurations"]["3d_fullres"]["batch_size"] += 1
    (model / "plans.json").write_text(json.dumps(edited))
    inp = tmp_path / "in"
    inp.mkdir()
    for f in sorted((brain_model["raw"] / BRAIN / "imagesTs").glob("*.nii.gz"))[:2]:
        shutil.copy(f, inp / f.name)
    code = main(["predict", "-i", str(inp), "-o", str(tmp_path / "out"), "-d", "501", "-c", "3d_fullres",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "checkpoint does not belong to this model folder's plans" in lines[0]
    assert "fold_0/checkpoint_final.pth" in lines[0] and not (tmp_path / "out").exists()
