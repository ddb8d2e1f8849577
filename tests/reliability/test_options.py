"""Every numeric option of every command is checked when the command line is parsed (range, finiteness, type), so
a bad value stops with argparse's one-line error (exit 2) before anything loads."""
from __future__ import annotations

import argparse

import pytest

from xtlunet.cli import build_parser, main
from xtlunet.errors import XtlunetError

PREDICT = ["predict", "-i", "in", "-o", "out", "-d", "501", "-c", "3d_fullres"]
TRAIN = ["train", "501", "3d_fullres", "0"]
PRETRAIN = ["pretrain-2d", "-d", "503", "-o", "x.pth"]
EXPERIMENT = ["experiment", "-d", "501", "-c", "3d_fullres"]
COMPARE = ["compare", "-d", "501", "-c", "3d_fullres", "--arms", "A", "B"]


@pytest.mark.parametrize("argv, option, needle", [
    ([*TRAIN, "--save-every", "0"], "--save-every", "≥ 1, got '0'"),
    ([*TRAIN, "--epochs", "-1"], "--epochs", "≥ 1"),
    ([*TRAIN, "--iters-per-epoch", "2.5"], "--iters-per-epoch", "a whole number"),
    ([*TRAIN, "--val-iters", "0"], "--val-iters", "≥ 1"),
    ([*TRAIN, "--num-gpus", "0"], "--num-gpus", "≥ 1"),
    ([*TRAIN, "--seed", "-5"], "--seed", "≥ 0"),
    (["train", "501", "3d_fullres", "5"], "fold", "fold '5' is not valid — fix: use a fold 0–4 or 'all'"),
    ([*EXPERIMENT, "--gpu-memory-gb", "nan"], "--gpu-memory-gb", "finite number > 0"),
    ([*EXPERIMENT, "-np", "0"], "-np", "≥ 1"),
    ([*EXPERIMENT, "--epochs", "ten"], "--epochs", "a whole number, got 'ten'"),
    ([*PREDICT, "--step-size", "0"], "--step-size", "in (0, 1]"),
    ([*PREDICT, "--step-size", "nan"], "--step-size", "in (0, 1]"),
    ([*PREDICT, "--step-size", "1.5"], "--step-size", "in (0, 1]"),
    ([*PREDICT, "--batch-windows", "0"], "--batch-windows", "≥ 1"),
    ([*PREDICT, "-npp", "0"], "-npp", "≥ 1"),
    ([*PREDICT, "-f", "0", "7"], "-f", "fold '7' is not valid"),
    (["plan-and-preprocess", "-d", "501", "--gpu-memory-gb", "0"], "--gpu-memory-gb", "> 0"),
    (["plan-and-preprocess", "-d", "501", "--gpu-memory-gb", "inf"], "--gpu-memory-gb", "finite"),
    (["plan-and-preprocess", "-d", "501", "-np", "-2"], "-np", "≥ 1"),
    ([*PRETRAIN, "--lr", "0"], "--lr", "> 0"),
    ([*PRETRAIN, "--momentum", "1"], "--momentum", "in [0, 1)"),
    ([*PRETRAIN, "--val-fraction", "1"], "--val-fraction", "in (0, 1)"),
    ([*PRETRAIN, "--val-fraction", "0"], "--val-fraction", "in (0, 1)"),
    ([*PRETRAIN, "--input-size", "0", "64"], "--input-size", "≥ 1"),
    ([*PRETRAIN, "--batch-size", "0"], "--batch-size", "≥ 1"),
    ([*PRETRAIN, "--patience", "0"], "--patience", "≥ 1"),
    ([*PRETRAIN, "--max-side", "-64"], "--max-side", "≥ 1"),
    ([*PRETRAIN, "--epochs", "0"], "--epochs", "≥ 1"),
    (["example", "brain-ms", "--cases", "0"], "--cases", "≥ 1"),
    (["example", "brain-ms", "--test-cases", "0"], "--test-cases", "≥ 1"),
    (["example", "brain-ms", "--seed", "-1"], "--seed", "≥ 0"),
    (["evaluate", "-r", "ref", "-p", "pred", "--n-boot", "0"], "--n-boot", "≥ 1"),
    (["evaluate", "-r", "ref", "-p", "pred", "--seed", "1e3"], "--seed", "a whole number"),
    ([*COMPARE, "--folds", "0", "5"], "--folds", "fold '5' is not valid"),
    ([*COMPARE, "--n-boot", "-1"], "--n-boot", "≥ 1"),
])
def test_bad_value_stops_at_parse_time(roots, capsys, argv, option, needle):
    code = main(argv)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert last.startswith(f"xtlunet {argv[0]}: error: argument {option}") and needle in last, last
    assert not [f for p in roots.values() for f in p.iterdir()]         # nothing was loaded or written


def _options() -> list[tuple[str, argparse.Action]]:
    """(command, action) of every option of every subcommand."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, action) for name, parser in sub.choices.items() for action in parser._actions]


def test_every_numeric_option_has_a_checked_type():
    """No option parses with a bare int/float (which accept 0, negatives, nan, inf); numeric defaults imply a check."""
    for command, action in _options():
        where = f"{command} {'/'.join(action.option_strings) or action.dest}"
        assert action.type not in (int, float), f"{where}: use a checked type from xtlunet/cli_types.py"
        if isinstance(action.default, (int, float)) and not isinstance(action.default, bool):
            assert action.type is not None, f"{where}: numeric default without a type check"


def test_defaults_and_edge_values_parse():
    parser = build_parser()
    a = parser.parse_args([*PREDICT, "--step-size", "1", "--batch-windows", "1", "-f", "all", "0"])
    assert a.step_size == 1.0 and a.batch_windows == 1 and a.f == ["all", 0]
    a = parser.parse_args([*PRETRAIN, "--momentum", "0", "--val-fraction", "0.5", "--input-size", "64", "32"])
    assert a.momentum == 0.0 and a.val_fraction == 0.5 and a.input_size == [64, 32]
    a = parser.parse_args([*TRAIN, "--seed", "0"])
    assert (a.save_every, a.epochs, a.seed, a.fold) == (5, 1000, 0, 0)
    assert parser.parse_args(["train", "501", "3d_fullres", "all"]).fold == "all"


def test_train_fold_refuses_save_every_zero_from_python():
    """The Python entry checks the budget too, before anything loads (no ZeroDivisionError after an epoch)."""
    from xtlunet.launch import train_fold
    from xtlunet.training.run_spec import RunSpec

    with pytest.raises(XtlunetError, match="--save-every must be a whole number ≥ 1, got 0"):
        train_fold("ScratchTrainer", RunSpec("501", "3d_fullres", 0, save_every=0))


def test_help_returns_zero(capsys):
    assert main(["train", "--help"]) == 0
    assert "--save-every" in capsys.readouterr().out
