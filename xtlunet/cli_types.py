"""argparse `type=` checks of numeric options: a bad value stops at parse time, before anything loads."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def _number(text: str, kind: type) -> int | float:
    """text as an int or a float, or an argparse error."""
    try:
        return kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got '{text}'") from None


def positive_int(text: str) -> int:
    """A whole number ≥ 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1, got '{text}'")
    return value


def non_negative_int(text: str) -> int:
    """A whole number ≥ 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 0, got '{text}'")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got '{text}'")
    return value


def fraction(low: float, high: float, low_open: bool, high_open: bool) -> Callable[[str], float]:
    """A type: a finite number in the interval low..high (each end open or closed)."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(text: str) -> float:
        value = _number(text, float)
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"must be a number in {shown}, got '{text}'")
        return value

    check.__name__ = f"number in {shown}"
    return check


def fold_index(text: str) -> int:
    """A cross-validation fold index, 0 … NUM_FOLDS − 1."""
    from xtlunet.paths import NUM_FOLDS

    if not (text.isdigit() and int(text) < NUM_FOLDS):
        raise argparse.ArgumentTypeError(f"fold '{text}' is not valid — fix: use a fold 0–{NUM_FOLDS - 1}")
    return int(text)


def fold_or_all(text: str) -> int | str:
    """A fold index, or 'all' (the model trained on every case)."""
    from xtlunet.paths import NUM_FOLDS

    if text == "all":
        return text
    if not (text.isdigit() and int(text) < NUM_FOLDS):
        raise argparse.ArgumentTypeError(f"fold '{text}' is not valid — fix: use a fold 0–{NUM_FOLDS - 1} or 'all'")
    return int(text)


STEP = fraction(0, 1, low_open=True, high_open=False)           # sliding-window step: (0, 1] of the patch
PROPER_FRACTION = fraction(0, 1, low_open=True, high_open=True)  # a share strictly between none and all
MOMENTUM = fraction(0, 1, low_open=False, high_open=True)         # SGD momentum: [0, 1)


def add_model_options(p: argparse.ArgumentParser, folds_help: str) -> None:
    """The options that name a trained model and its folds: -d, -c, -tr, -p, -f, --checkpoint."""
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("-tr", default="ScratchTrainer", help="trainer (default ScratchTrainer)")
    p.add_argument("-p", default=None, help="plans name (needed when the trainer was run with several plans)")
    p.add_argument("-f", nargs="+", type=fold_or_all, default=None, help=folds_help)
    p.add_argument("--checkpoint", default="final", help="final | best")
