"""Dataset fingerprint: spacings, shapes before/after crop, foreground intensities, finding statistics.

Foreground intensities are drawn with replacement, FOREGROUND_SAMPLES / N per case (N training cases), as nnU-Net v2
does, so every case weighs the same in the CT clipping percentiles, mean and std whatever its foreground size. A case
keeps its draws as (value, how often drawn) pairs, so one with little foreground costs memory for its voxels only.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xtlunet.dataset.findings import Finding, read_findings
from xtlunet.dataset.loading import LoadedCase, load_case, reoriented
from xtlunet.dataset.spec import Case, DatasetSpec
from xtlunet.preprocessing.crop import crop_case
from xtlunet.utils.atomic import read_json, write_json
from xtlunet.utils.parallel import map_cases

log = logging.getLogger("xtlunet")
FOREGROUND_SAMPLES = 10 ** 8  # foreground intensities drawn per channel over the whole dataset (nnU-Net: 10e7)
FINGERPRINT_SEED = 1234
EXPAND_MAX_REPEAT = 8  # pooled draws averaging at most this many repeats are expanded, else the distinct ones sorted
PERCENTILES = (0.5, 50.0, 99.5)
Draws = tuple[np.ndarray, np.ndarray]  # (values float32, how often each was drawn, int32)


def samples_per_case(num_cases: int) -> int:
    """Foreground intensities drawn (with replacement) per case and channel: FOREGROUND_SAMPLES / N."""
    return int(FOREGROUND_SAMPLES // max(num_cases, 1))


@dataclass
class CaseFingerprint:
    """What the planner needs to know about one case."""

    case_id: str
    spacing: list[float]
    shape_before_crop: list[int]
    shape_after_crop: list[int]
    channel_geometries: list[dict[str, Any]]
    finding_border_mm: list[float] = field(default_factory=list)
    orientation: str = ""  # anatomical direction of the input's index axes (x, y, z), e.g. 'LPS', 'RAS', 'PSL'


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
    samples_per_case: int = 0  # foreground intensities drawn per case (0: an older fingerprint, sampled otherwise)
    reoriented: bool = False  # spacings and shapes are those of the cases in their closest RAS+ frame

    def is_current(self, spec: DatasetSpec, reorient: bool) -> bool:
        """Whether this fingerprint describes the training cases of `spec` as they are now to be planned."""
        ids = [c.case_id for c in spec.cases("Tr")]
        return ([c.case_id for c in self.cases] == ids and self.reoriented == reorient
                and self.channel_names == {str(k): v for k, v in spec.channel_names.items()}
                and self.samples_per_case == samples_per_case(len(ids)))

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


def draw_with_replacement(values: np.ndarray, k: int, rng: np.random.Generator) -> Draws:
    """k uniform draws with replacement from `values`, as (drawn values, how often each was drawn).

    With more values than draws, k indices are drawn; with fewer, the draw counts per value come from one
    multinomial draw (the same distribution, memory for the values rather than for the k draws).
    """
    n = values.size
    if n == 0 or k == 0:
        return np.empty(0, np.float32), np.empty(0, np.int32)
    if n >= k:
        return values[rng.integers(0, n, k)].astype(np.float32), np.ones(k, np.int32)
    counts = rng.multinomial(k, np.full(n, 1.0 / n))
    drawn = counts > 0
    return values[drawn].astype(np.float32), counts[drawn].astype(np.int32)


def foreground_draws(lc: LoadedCase, k: int, rng: np.random.Generator) -> tuple[list[Draws], np.ndarray, np.ndarray]:
    """Per channel, k draws from the foreground (label > 0, else the non-zero mask) of the cropped case."""
    data, seg, mask, _ = crop_case(lc.data, lc.seg)
    fg = (seg > 0) if seg is not None and (seg > 0).any() else mask
    return [draw_with_replacement(data[c][fg], k, rng) for c in range(data.shape[0])], data, seg


def finding_borders(lc: LoadedCase, findings: list[Finding]) -> list[float]:
    """Distance (mm) of each located finding to the nearest image border."""
    border = []
    sp, shape = np.asarray(lc.geometry.spacing), np.asarray(lc.geometry.shape)
    for f in findings:
        if f.position is not None:
            idx = lc.geometry.world_to_index(f.position)
            border.append(float(np.min(np.minimum(idx, shape - 1 - idx) * sp)))
    return border


def _case_fingerprint(args: tuple[Case, DatasetSpec, int, list[Finding], tuple[int, int], int, bool]
                      ) -> tuple[CaseFingerprint, list[Draws], dict[int, int], list[str]]:
    """Fingerprint one case (runs in a worker), in its closest RAS+ frame when `reorient`."""
    case, spec, dim, findings, seed, k, reorient = args
    lc = load_case(case, spec, dim)
    orientation = lc.geometry.axis_codes()
    if reorient:
        lc = reoriented(lc)
    draws, data, seg = foreground_draws(lc, k, np.random.default_rng(seed))
    labels = {int(v): int(n) for v, n in zip(*np.unique(seg, return_counts=True))} if seg is not None else {}
    cf = CaseFingerprint(case.case_id, list(lc.geometry.spacing), list(lc.data.shape[1:]), list(data.shape[1:]),
                         [g.to_json() for g in lc.channel_geometries], finding_borders(lc, findings), orientation)
    return cf, draws, labels, lc.notes


def order_statistics(values: np.ndarray, counts: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Elements at `ranks` (0-based) of the sorted multiset in which values[i] occurs counts[i] times."""
    total = int(counts.sum(dtype=np.int64))
    if values.size * EXPAND_MAX_REPEAT >= total:  # few repeats: select in the expanded draws, O(total)
        return np.partition(np.repeat(values, counts), ranks)[ranks]
    order = np.argsort(values)  # many repeats: sort the distinct draws only, O(m log m) with m ≪ total
    ends = np.cumsum(counts[order], dtype=np.int64)
    return values[order][np.searchsorted(ends, ranks, side="right")]


def _lerp(a: float, b: float, t: float) -> float:
    """Linear interpolation between neighbouring order statistics, written as np.percentile writes it."""
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


def weighted_percentiles(values: np.ndarray, counts: np.ndarray, q: tuple[float, ...] = PERCENTILES) -> list[float]:
    """np.percentile (linear) of the multiset in which values[i] occurs counts[i] times, without expanding it."""
    total = int(counts.sum(dtype=np.int64))
    h = (total - 1) * np.asarray(q, np.float64) / 100.0
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, total - 1)
    ranks = np.unique(np.concatenate([lo, hi]))
    at = dict(zip(ranks.tolist(), order_statistics(values, counts, ranks).astype(np.float64).tolist()))
    return [_lerp(at[a], at[b], t) for a, b, t in zip(lo.tolist(), hi.tolist(), (h - lo).tolist())]


def intensity_stats(values: np.ndarray, counts: np.ndarray | None = None) -> dict[str, float]:
    """Mean, std, median, min, max and 0.5/99.5 percentiles of foreground draws (values[i] drawn counts[i] times)."""
    if values.size == 0:
        return {k: 0.0 for k in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")}
    counts = np.ones(values.size, np.int32) if counts is None else counts
    total = float(counts.sum(dtype=np.int64))
    mean = float(np.einsum("i,i->", values, counts, dtype=np.float64) / total)
    centred = values.astype(np.float64) - mean
    std = float(np.sqrt(np.einsum("i,i,i->", centred, centred, counts, dtype=np.float64) / total))
    del centred
    p = weighted_percentiles(values, counts)
    return {"mean": mean, "std": std, "median": p[1], "min": float(values.min()), "max": float(values.max()),
            "percentile_00_5": p[0], "percentile_99_5": p[2]}


def pooled_intensity_stats(per_case: list[list[Draws]], channel: int) -> dict[str, float]:
    """Intensity statistics of one channel over the draws of all cases (each case drew as many)."""
    values = np.concatenate([draws[channel][0] for draws in per_case])
    counts = np.concatenate([draws[channel][1] for draws in per_case])
    return intensity_stats(values, counts)


def compute_fingerprint(spec: DatasetSpec, dim: int, num_workers: int = 1, reorient: bool = False,
                        seed: int = FINGERPRINT_SEED) -> Fingerprint:
    """Fingerprint every training case of a dataset (parallel over cases, tqdm bar); deterministic per seed.

    With `reorient`, spacings and shapes are those of the cases in their closest RAS+ frame (what planning sees).
    """
    cases = spec.cases("Tr")
    findings = read_findings(spec.findings_path, spec.classes) if spec.is_classification else []
    by_case: dict[str, list[Finding]] = {}
    for f in findings:
        by_case.setdefault(f.case_id, []).append(f)
    k = samples_per_case(len(cases))
    jobs = [(c, spec, dim, by_case.get(c.case_id, []), (seed, i), k, reorient) for i, c in enumerate(cases)]
    results = map_cases(_case_fingerprint, jobs, num_workers, desc="fingerprint")
    counts: Counter[int] = Counter()
    notes: list[str] = []
    for r in results:
        counts.update(r[2])
        notes.extend(r[3])
    if not spec.is_classification and cases and not any(v > 0 and n for v, n in counts.items()):
        log.warning("every label map of %s is background only: training will refuse to start until labelsTr holds "
                    "the structures (values %s)", spec.name, ", ".join(map(str, spec.foreground_labels())))
    intensity = {str(c): pooled_intensity_stats([r[1] for r in results], c) for c in range(spec.num_channels)}
    return Fingerprint(spec.name, spec.task, dim, {str(k): v for k, v in spec.channel_names.items()},
                       [r[0] for r in results], intensity, {str(k): v for k, v in sorted(counts.items())},
                       _finding_stats(findings, spec), notes, samples_per_case=k, reoriented=reorient)


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
