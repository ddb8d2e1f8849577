"""benchmarks/ablation.py without training: which cells it runs, with which weights, and the table it writes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def ablation():
    """The ablation script as a module."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import ablation as module
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_without_natural_image_weights_the_tl_rows_are_left_out(ablation, tmp_path):
    args = ablation.parse_args(["--examples", "brain-ms", "prostate"])
    cells = ablation.plan_cells(args, tmp_path / "mammo.pth")
    # per example and norm: Scratch once, XTL per mode; no TL
    assert len(cells) == 2 * 2 * (1 + 3)
    assert {c.arm for c in cells} == {"ScratchTrainer", "XTLTrainer"}
    assert all("--tl-weights" not in c.command and "--xtl-weights" in c.command for c in cells)
    scratch = [c for c in cells if c.arm == "ScratchTrainer"]
    assert [(c.example, c.norm, c.mode) for c in scratch] == [(e, n, "-") for e in ("brain-ms", "prostate")
                                                              for n in ("instance", "batch")]


def test_natural_image_weights_add_tl_rows_on_the_same_plans(ablation, tmp_path):
    weights = tmp_path / "resnet18_imagenet.pth"
    weights.write_bytes(b"stand-in")
    args = ablation.parse_args(["--examples", "prostate", "--norms", "batch", "--tl-weights", str(weights),
                                "--folds", "0", "2"])
    cells = ablation.plan_cells(args, tmp_path / "mammo.pth")
    assert [(c.arm, c.mode) for c in cells] == [("ScratchTrainer", "-"), ("TLTrainer", "inflate"),
                                                ("XTLTrainer", "inflate"), ("TLTrainer", "center"),
                                                ("XTLTrainer", "center"), ("TLTrainer", "acs"), ("XTLTrainer", "acs")]
    for c in cells:
        cmd = c.command
        assert cmd[cmd.index("--tl-weights") + 1] == str(weights)
        assert cmd[cmd.index("--transfer-norm") + 1] == "batch"
        assert cmd[cmd.index("--plans-name") + 1] == c.plans == f"ablation_batch_{'inflate' if c.mode == '-' else c.mode}"
        assert cmd[cmd.index("--folds") + 1:cmd.index("--folds") + 3] == ["0", "2"]
    table = ablation.markdown(cells, args, tmp_path)
    assert table.count("| prostate | TLTrainer |") == 3 and "TL rows left out" not in table
    assert str(tmp_path) not in table and "$WORK/mammo.pth" in table


def test_bad_options_are_refused(ablation, tmp_path, capsys):
    for argv, needle in ((["--folds", "5"], "--folds take values 0 to 4"),
                         (["--epochs", "0"], "--epochs must be at least 1"),
                         (["--tl-weights", str(tmp_path / "none.pth")], "is not a file")):
        with pytest.raises(SystemExit):
            ablation.parse_args(argv)
        assert needle in capsys.readouterr().err
