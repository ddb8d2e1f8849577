"""Dataset fingerprint: spacings, shapes before/after crop, foreground intensities, finding statistics."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xtlunet.dataset.findings import Finding, read_findings
from xtlunet.dataset.loading import load_case
from xtlunet.dataset.spec import Case, DatasetSpec
from xtlunet.preprocessing.crop import crop_case
from xtlunet.utils.atomic import read_json, write_json
from xtlunet.utils.parallel import map_cases

log = logging.getLogger("xtlunet")
SAMPLES_PER_CASE = 10000


@dataclass
class CaseFingerprint:
    """What the planner needs to know about one case."""

    case_id: str
    spacing: list[float]
    shape_before_crop: list[int]
    shape_after_crop: list[int]
    channel_geometries: list[dict[str, Any]]
    finding_border_mm: list[float] = field(default_factory=list)


@dataclass
class Fingerprint:
    """Dataset-level statistics written to fingerprint.json."""

    dataset_name: str
    task: str
    dim: int
    channel_names: dict[str, str]
    cases: list[CaseFingerprint]
    intensity: dict[str, dict[str, float]]
    label_counts: dict[str, int] = field(default_factory=dict)
    findings: dict[str, Any] = field(default_factory=dict)
    resampled_channels: list[str] = field(default_factory=list)

    @property
    def spacings(self) -> np.ndarray:
        """(N, dim) spacings of all cases."""
        return np.array([c.spacing for c in self.cases], dtype=float)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        """(N, dim) shapes after cropping."""
        return np.array([c.shape_after_crop for c in self.cases], dtype=float)

    def median_relative_size_after_crop(self) -> float:
        """Median of voxels-after-crop / voxels-before-crop."""
        r = [np.prod(c.shape_after_crop) / np.prod(c.shape_before_crop) for c in self.cases]
        return float(np.median(r))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Fingerprint":
        """Inverse of to_json."""
        return cls(**{**d, "cases": [CaseFingerprint(**c) for c in d["cases"]]})

    def save(self, path: Path) -> None:
        """Write atomically."""
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "Fingerprint":
        """Read fingerprint.json."""
        return cls.from_json(read_json(path))


def _case_fingerprint(args: tuple[Case, DatasetSpec, int, list[Finding], int]) -> tuple[CaseFingerprint, list[np.ndarray], dict[int, int], list[str]]:
    """Fingerprint one case (runs in a worker)."""
    case, spec, dim, findings, seed = args
    lc = load_case(case, spec, dim)
    data, seg, mask, bbox = crop_case(lc.data, lc.seg)
    fg = (seg > 0) if seg is not None and (seg > 0).any() else mask
    rng = np.random.default_rng(seed)
    samples = []
    for c in range(data.shape[0]):
        vals = data[c][fg]
        if vals.size > SAMPLES_PER_CASE:
            vals = rng.choice(vals, SAMPLES_PER_CASE, replace=False)
        samples.append(vals.astype(np.float32))
    counts = {int(k): int(v) for k, v in zip(*np.unique(seg, return_counts=True))} if seg is not None else {}
    border = []
    for f in findings:
        if f.position is None:
            continue
        idx = lc.geometry.world_to_index(f.position)
        sp = np.asarray(lc.geometry.spacing)
        border.append(float(np.min(np.minimum(idx, np.asarray(lc.geometry.shape) - 1 - idx) * sp)))
    cf = CaseFingerprint(case.case_id, list(lc.geometry.spacing), list(lc.data.shape[1:]), list(data.shape[1:]),
                         [g.to_json() for g in lc.channel_geometries], border)
    return cf, samples, counts, lc.notes


def intensity_stats(values: np.ndarray) -> dict[str, float]:
    """Mean, std, median, min, max and 0.5/99.5 percentiles of foreground samples."""
    if values.size == 0:
        return {k: 0.0 for k in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")}
    p = np.percentile(values, [0.5, 50, 99.5])
    return {"mean": float(values.mean()), "std": float(values.std()), "median": float(p[1]),
            "min": float(values.min()), "max": float(values.max()),
            "percentile_00_5": float(p[0]), "percentile_99_5": float(p[2])}


def compute_fingerprint(spec: DatasetSpec, dim: int, num_workers: int = 1) -> Fingerprint:
    """Fingerprint every training case of a dataset (parallel over cases, tqdm bar)."""
    cases = spec.cases("Tr")
    findings = read_findings(spec.findings_path, spec.classes) if spec.is_classification else []
    by_case: dict[str, list[Finding]] = {}
    for f in findings:
        by_case.setdefault(f.case_id, []).append(f)
    jobs = [(c, spec, dim, by_case.get(c.case_id, []), i) for i, c in enumerate(cases)]
    results = map_cases(_case_fingerprint, jobs, num_workers, desc="fingerprint")
    per_channel = [np.concatenate([r[1][c] for r in results]) for c in range(spec.num_channels)]
    counts: Counter[int] = Counter()
    notes: list[str] = []
    for r in results:
        counts.update(r[2])
        notes.extend(r[3])
    fp = Fingerprint(spec.name, spec.task, dim, {str(k): v for k, v in spec.channel_names.items()},
                     [r[0] for r in results],
                     {str(c): intensity_stats(v) for c, v in enumerate(per_channel)},
                     {str(k): v for k, v in sorted(counts.items())}, _finding_stats(findings, spec), notes)
    return fp


def _finding_stats(findings: list[Finding], spec: DatasetSpec) -> dict[str, Any]:
    """Finding counts per class, per patient and per case."""
    if not findings:
        return {}
    names = {v: k for k, v in spec.classes.items()}
    per_class = Counter(names[f.label] for f in findings)
    per_patient = Counter(f.patient_id for f in findings)
    per_case = Counter(f.case_id for f in findings)
    return {"total": len(findings), "per_class": dict(per_class), "patients": len(per_patient),
            "per_patient_median": float(np.median(list(per_patient.values()))),
            "per_case_median": float(np.median(list(per_case.values()))),
            "whole_image": sum(f.position is None for f in findings)}
