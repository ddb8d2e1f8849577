"""Prediction overlaps its stages: the next case is preprocessed and the previous one exported while the network runs.

The order of events is checked with barriers, not timings: a stage waits (with a time-out that fails the test) for
a stage of another case that can only run at the same time when the stages overlap.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from xtlunet.dataset.io import read_image
from xtlunet.inference import folder
from xtlunet.inference.folder import PredictOptions, predict_folder
from xtlunet.inference.models import TrainedModel
from xtlunet.utils.parallel import OneAtATime, read_ahead

from tiny_folder_model import CASES, folder_bytes, tiny_folder_model

WAIT_S = 30.0   # a barrier not met by then means the stages did not overlap (the test fails, it does not hang)


@pytest.fixture
def tiny(tmp_path: Path, make_plans: Callable[..., Any], make_net: Callable[..., Any]) -> tuple[TrainedModel, Path]:
    """A one-fold untrained 3D model and an input folder of three small oblique cases."""
    return tiny_folder_model(tmp_path, make_plans, make_net)


class Events:
    """A thread-safe log of (stage, case, 'start'|'end'), and a named barrier per awaited stage."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._flags: dict[tuple[str, str], threading.Event] = {}

    def flag(self, stage: str, case: str) -> threading.Event:
        """The event set when `stage` of `case` starts."""
        with self._lock:
            return self._flags.setdefault((stage, case), threading.Event())

    def add(self, stage: str, case: str, what: str) -> None:
        """Log an event; a start also sets its flag."""
        with self._lock:
            self.log.append((stage, case, what))
        if what == "start":
            self.flag(stage, case).set()

    def wait(self, stage: str, case: str, by: str) -> None:
        """Wait until `stage` of `case` has started; log a time-out (which fails the test) if it never does."""
        if not self.flag(stage, case).wait(WAIT_S):
            self.add("timeout", f"{stage} {case}", by)

    def index(self, stage: str, case: str, what: str) -> int:
        """Position of an event in the log."""
        return self.log.index((stage, case, what))


def instrument(monkeypatch: pytest.MonkeyPatch, events: Events, waits: dict[tuple[str, str], tuple[str, str]]) -> None:
    """Log every preprocess/forward/export of the prediction loop; `waits`: (stage, case) → (stage, case) it first
    waits for (after logging its own start)."""
    real = {"preprocess": folder._preprocess, "forward": folder.predict_case, "export": folder.export_prediction}
    forwarded: list[str] = []

    def stage(name: str, case: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        events.add(name, case, "start")
        if (name, case) in waits:
            events.wait(*waits[(name, case)], by=f"{name} {case}")
        try:
            return fn(*args, **kwargs)
        finally:
            events.add(name, case, "end")

    def preprocess(args: Any) -> Any:
        forwarded.append(args[0].case_id)   # the network runs the cases in this order
        return stage("preprocess", args[0].case_id, real["preprocess"], args)

    def forward(*args: Any, **kwargs: Any) -> Any:
        case = CASES[len([e for e in events.log if e[0] == "forward" and e[2] == "start"])]
        return stage("forward", case, real["forward"], *args, **kwargs)

    def export(logits: Any, props: Any, plans: Any, out: Path, *args: Any) -> Any:
        return stage("export", out.name.split(".")[0], real["export"], logits, props, plans, out, *args)

    monkeypatch.setattr(folder, "_preprocess", preprocess)
    monkeypatch.setattr(folder, "predict_case", forward)
    monkeypatch.setattr(folder, "export_prediction", export)


def run(tiny: tuple[TrainedModel, Path], out: Path, **options: Any) -> folder.PredictResult:
    """predict_folder of the tiny model's input folder into `out`."""
    model, src = tiny
    return predict_folder(src, out, model, PredictOptions(tta=False, batch_windows=2, **options))


def test_stages_overlap_and_give_the_sequential_outputs(tiny, tmp_path, monkeypatch):
    events = Events()
    instrument(monkeypatch, events, {
        ("forward", "c0"): ("preprocess", "c1"),   # c1 is read while the network runs c0
        ("export", "c0"): ("forward", "c1"),       # c0 is exported while the network runs c1 ...
        ("forward", "c1"): ("export", "c0"),       # ... in both directions
    })
    result = run(tiny, tmp_path / "overlap", save_probabilities=True)
    assert result.written == CASES and not result.failed
    assert not [e for e in events.log if e[0] == "timeout"], events.log
    assert events.index("preprocess", "c1", "start") < events.index("forward", "c0", "end")
    assert events.index("export", "c0", "start") < events.index("forward", "c1", "end")
    assert events.index("forward", "c1", "start") < events.index("export", "c0", "end")
    for a, b in zip(CASES, CASES[1:]):   # one export at a time, in case order
        assert events.index("export", a, "end") < events.index("export", b, "start")

    monkeypatch.undo()
    sequential = Events()
    instrument(monkeypatch, sequential, {})
    assert run(tiny, tmp_path / "sequential", save_probabilities=True, overlap=False).written == CASES
    assert sequential.log == [(stage, case, what) for case in CASES for stage in ("preprocess", "forward", "export")
                              for what in ("start", "end")]
    got, want = folder_bytes(tmp_path / "overlap"), folder_bytes(tmp_path / "sequential")
    assert sorted(got) == sorted([f"{c}.nii.gz" for c in CASES] + [f"{c}.npz" for c in CASES])
    assert got == want   # byte for byte
    labels, _ = read_image(tmp_path / "overlap" / "c0.nii.gz")
    assert len(np.unique(labels)) > 1   # the untrained net predicts more than one label: a real comparison


@pytest.mark.parametrize("overlap", [True, False])
def test_a_failing_export_is_reported_against_its_case(tiny, tmp_path, monkeypatch, caplog, overlap):
    real = folder.export_prediction

    def export(logits: Any, props: Any, plans: Any, out: Path, *args: Any) -> Any:
        if out.name.startswith("c1"):
            raise OSError(28, "No space left on device", str(out))
        return real(logits, props, plans, out, *args)

    monkeypatch.setattr(folder, "export_prediction", export)
    result = run(tiny, tmp_path / "out", overlap=overlap)
    assert result.written == ["c0", "c2"]
    assert result.failed == {"c1": f"[Errno 28] No space left on device: '{tmp_path / 'out' / 'c1.nii.gz'}'"}
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"case c1 failed: {result.failed['c1']}"]
    assert sorted(folder_bytes(tmp_path / "out")) == ["c0.nii.gz", "c2.nii.gz"]


def test_ctrl_c_lets_the_export_in_flight_finish_and_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
    events = Events()
    forward = folder.predict_case

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        if events.flag("export", "c0").is_set():   # the network's pass over c1, while c0 is being exported
            events.add("interrupt", "c1", "start")
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    monkeypatch.setattr(folder, "predict_case", interrupted)
    instrument(monkeypatch, events, {("export", "c0"): ("forward", "c1"), ("forward", "c1"): ("export", "c0")})
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(tiny, out)
    assert not [e for e in events.log if e[0] == "timeout"], events.log
    assert events.index("interrupt", "c1", "start") < events.index("export", "c0", "end")
    assert [p.name for p in sorted(out.iterdir())] == ["c0.nii.gz"]   # whole, and nothing partial
    labels, geo = read_image(out / "c0.nii.gz")
    assert geo.mismatch(read_image(tiny[1] / "c0_0000.nii.gz")[1]) == [] and labels.dtype == np.uint8
    assert not [t for t in threading.enumerate() if t.name.startswith(("xtlunet-export", "xtlunet-read-ahead"))]
    monkeypatch.undo()
    again = run(tiny, out)   # the lock was released; the rest is predicted
    assert again.skipped == ["c0"] and again.written == ["c1", "c2"]


def test_read_ahead_is_one_ahead_and_raises_in_place():
    made: list[int] = []
    second = threading.Event()

    def source():
        for i in range(4):
            if i == 3:
                raise ValueError("three")
            made.append(i)
            if i == 1:
                second.set()
            yield i

    it = read_ahead(source())
    assert next(it) == 0
    assert second.wait(WAIT_S)   # item 1 is made in the background while the caller holds item 0 ...
    assert made == [0, 1]        # ... and no further one
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(ValueError, match="three"):
        next(it)


@pytest.mark.parametrize("background", [True, False])
def test_one_at_a_time_hands_back_results_and_errors_in_order(background):
    jobs: OneAtATime[str] = OneAtATime(background)
    done = jobs.submit("a", lambda x: x * 2, 21)
    done += jobs.submit("b", lambda: 1 / 0)
    done += jobs.submit("c", str.upper, "c")
    done += jobs.finish()
    jobs.close()
    assert [k for k, _ in done] == ["a", "b", "c"]
    assert done[0][1] == 42 and isinstance(done[1][1], ZeroDivisionError) and done[2][1] == "C"
