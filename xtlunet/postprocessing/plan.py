"""postprocessing.json: per foreground label the operation learnt on cross-validation, with the scores that chose it.

The file format is written down in documentation/after_training.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from xtlunet.errors import XtlunetError
from xtlunet.postprocessing.components import KEEP_LARGEST, NONE, OPERATIONS, REMOVE_SMALL, apply_operation
from xtlunet.postprocessing.scores import ClassScore, finite_mean
from xtlunet.utils.atomic import read_json, write_json

FORMAT = "xtlunet.postprocessing"
VERSION = 1
FIX = "learn it again with xtlunet find-best-configuration"


@dataclass
class Tried:
    """One candidate operation of a label and how it scored on cross-validation."""

    operation: str
    min_volume_mm3: float | None
    score: ClassScore
    passed: bool   # raised the pooled Dice without lowering the lesion F1 (the best of those passing is chosen)
    why: str

    def text(self) -> str:
        """The operation in words, with its scores: 'remove components < 12.5 mm³ (pooled Dice 0.8, lesion F1 0.7)'."""
        return f"{operation_text(self.operation, self.min_volume_mm3)} ({score_text(self.score)})"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"operation": self.operation, "min_volume_mm3": self.min_volume_mm3, **self.score.to_json(),
                "passed": self.passed, "why": self.why}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Tried":
        """Inverse of to_json."""
        return cls(str(d["operation"]), _volume(d.get("min_volume_mm3")), ClassScore.from_json(d), bool(d["passed"]),
                   str(d.get("why", "")))


@dataclass
class LabelRule:
    """The operation applied to one label, its parameter, and the label's CV scores before and after it."""

    name: str
    operation: str
    min_volume_mm3: float | None
    before: ClassScore
    after: ClassScore
    tried: list[Tried] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "operation": self.operation, "min_volume_mm3": self.min_volume_mm3,
                "before": self.before.to_json(), "after": self.after.to_json(),
                "tried": [t.to_json() for t in self.tried]}

    def describe(self, label: int) -> str:
        """One line of the decision: the operation kept with before → after scores, or why none was."""
        head = f"label {label}" + (f" ({self.name})" if self.name else "")
        if self.operation == NONE:
            why = "; ".join(f"{t.text()}: {t.why}" for t in self.tried) or "no candidate"
            return f"{head}: no operation ({score_text(self.before)}; tried {why})"
        b, a = self.before, self.after
        return (f"{head}: {operation_text(self.operation, self.min_volume_mm3)}: pooled Dice {_num(b.pooled_dice)} → "
                f"{_num(a.pooled_dice)}, lesion F1 {_num(b.lesion_f1)} → {_num(a.lesion_f1)}")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LabelRule":
        """Inverse of to_json; checks the operation and its parameter."""
        rule = cls(str(d.get("name", "")), str(d["operation"]), _volume(d.get("min_volume_mm3")),
                   ClassScore.from_json(d["before"]), ClassScore.from_json(d["after"]),
                   [Tried.from_json(t) for t in d.get("tried", [])])
        if rule.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {rule.operation!r} (known: {', '.join(OPERATIONS)})")
        if rule.operation == REMOVE_SMALL and (rule.min_volume_mm3 is None or rule.min_volume_mm3 < 0):
            raise ValueError(f"{REMOVE_SMALL} needs min_volume_mm3 ≥ 0")
        return rule


def _num(value: float) -> str:
    """A score with 4 decimals, 'n/a' when undefined."""
    return f"{value:.4f}" if math.isfinite(value) else "n/a"


def score_text(score: ClassScore) -> str:
    """'pooled Dice 0.8123, lesion F1 0.7000'."""
    return f"pooled Dice {_num(score.pooled_dice)}, lesion F1 {_num(score.lesion_f1)}"


def operation_text(operation: str, min_volume_mm3: float | None) -> str:
    """An operation in words."""
    if operation == REMOVE_SMALL:
        return f"remove components < {min_volume_mm3:.4g} mm³"
    return "keep the largest component" if operation == KEEP_LARGEST else "none"


def _volume(value: Any) -> float | None:
    """A volume threshold as read from JSON (None stays None)."""
    return None if value is None else float(value)


@dataclass
class PostprocessingPlan:
    """Per foreground label value, its rule; `source` says which cross-validation results it was learnt on."""

    rules: dict[int, LabelRule]
    source: dict[str, Any] = field(default_factory=dict)

    def active(self) -> dict[int, LabelRule]:
        """The labels that get an operation."""
        return {lab: r for lab, r in self.rules.items() if r.operation != NONE}

    def overall(self, when: str) -> ClassScore:
        """The CV scores 'before' or 'after' post-processing, each averaged over labels."""
        scores = [getattr(r, when) for r in self.rules.values()]
        return ClassScore(*(finite_mean([getattr(s, k) for s in scores])
                            for k in ("pooled_dice", "mean_dice", "lesion_f1")))

    def apply(self, seg: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """A copy of a label map with every rule applied (removed voxels → background)."""
        out = np.array(seg, copy=True)
        for lab, rule in sorted(self.active().items()):
            out = apply_operation(out, lab, rule.operation, spacing, rule.min_volume_mm3)
        return out

    def to_json(self) -> dict[str, Any]:
        """The file's content: format, version, source, the averaged scores, then one rule per label."""
        return {"format": FORMAT, "version": VERSION, "connectivity": "full (26 neighbours in 3D, 8 in 2D)",
                "source": dict(self.source), "before": self.overall("before").to_json(),
                "after": self.overall("after").to_json(),
                "labels": {str(lab): r.to_json() for lab, r in sorted(self.rules.items())}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], path: Path | str = "<postprocessing>") -> "PostprocessingPlan":
        """Inverse of to_json; refuses another format or version and a malformed rule, naming the file."""
        if not isinstance(d, Mapping) or d.get("format") != FORMAT or d.get("version") != VERSION:
            got = (d.get("format"), d.get("version")) if isinstance(d, Mapping) else (type(d).__name__, None)
            raise XtlunetError(f"not an xtlunet post-processing file (format {got[0]!r}, version {got[1]!r})",
                               path=path,
                               fix=f"give the postprocessing.json that find-best-configuration wrote, or {FIX}")
        try:
            return cls({int(k): LabelRule.from_json(v) for k, v in d["labels"].items()}, dict(d.get("source", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise XtlunetError(f"malformed post-processing file ({type(exc).__name__}: {exc})", path=path,
                               fix=FIX) from None

    def save(self, path: Path) -> Path:
        """Write postprocessing.json atomically."""
        write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> "PostprocessingPlan":
        """Read a postprocessing.json written by save."""
        return cls.from_json(read_json(path), path)
