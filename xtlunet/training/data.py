"""Training batches from the preprocessed arrays (memory-mapped): foreground-oversampled patches and finding ROIs."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase

from xtlunet.errors import XtlunetError
from xtlunet.utils.arrays import crop_padded
from xtlunet.utils.atomic import read_json


@dataclass
class CaseArrays:
    """One preprocessed case: data (C, *spatial) and seg memory-mapped, plus its properties."""

    case_id: str
    data: np.ndarray
    seg: np.ndarray | None
    props: dict[str, Any]
    locations: dict[int, np.ndarray] = field(default_factory=dict)


def load_case_arrays(folder: Path, case_id: str) -> CaseArrays:
    """Memory-map a preprocessed case; a missing or damaged file (also one truncated: the map checks its size) is a
    clear error naming the case and the file."""
    data = _map_array(folder / f"{case_id}.npy", case_id)
    seg_file = folder / f"{case_id}_seg.npy"
    seg = _map_array(seg_file, case_id) if seg_file.is_file() else None
    props = read_json(folder / f"{case_id}.json")
    locs = {int(k): np.asarray(v, dtype=np.int64).reshape(-1, seg.ndim if seg is not None else data.ndim - 1)
            for k, v in props.get("class_locations", {}).items() if len(v)}
    return CaseArrays(case_id, data, seg, props, locs)


def _map_array(path: Path, case_id: str) -> np.ndarray:
    """np.load(mmap_mode='r') of one array of a preprocessed case, failures as an XtlunetError."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise XtlunetError(f"cannot load preprocessed case {case_id} ({type(exc).__name__}: {exc})", path=path,
                           fix="re-run xtlunet plan-and-preprocess for this configuration (it redoes damaged "
                               "cases)") from None


def extraction_size(patch: Sequence[int], rotation_deg: float, min_scale: float, in_plane_only: bool) -> list[int]:
    """Patch to cut before spatial augmentation so rotation and zoom-out do not reach past it (nnU-Net's idea)."""
    a = math.radians(min(rotation_deg, 45.0))
    grow = (math.cos(a) + math.sin(a)) / min_scale
    dim = len(patch)
    rotating = range(1, dim) if (in_plane_only and dim == 3) else range(dim)
    return [int(math.ceil(p * grow)) if i in rotating else int(p) for i, p in enumerate(patch)]


def _case_slice(case: CaseArrays, dim: int, center: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """For a 2D configuration on 3D data: the slice through center[0]; else the whole case."""
    if case.data.ndim - 1 == dim:
        return case.data, case.seg, center
    z = int(np.clip(round(center[0]), 0, case.data.shape[1] - 1))
    return case.data[:, z], None if case.seg is None else case.seg[z], center[1:]


class SegmentationBatches(SlimDataLoaderBase):
    """Random patches; the last third of every batch centred on a foreground voxel (nnU-Net's oversampling)."""

    def __init__(self, cases: list[CaseArrays], patch: Sequence[int], batch_size: int, extract: Sequence[int],
                 oversample: float = 0.33) -> None:
        super().__init__(cases, batch_size)
        self.patch, self.extract = list(patch), list(extract)
        self.n_forced = max(1, int(round(batch_size * oversample))) if oversample > 0 else 0

    def _center(self, case: CaseArrays, forced: bool) -> np.ndarray:
        """A foreground voxel (forced) or a uniformly random voxel of the case."""
        labels = [k for k, v in case.locations.items() if len(v)]
        if forced and labels:
            locs = case.locations[labels[np.random.randint(len(labels))]]
            return locs[np.random.randint(len(locs))].astype(float)
        return np.array([np.random.randint(n) for n in case.data.shape[1:]], dtype=float)

    def generate_train_batch(self) -> dict[str, Any]:
        """One batch: data (B, C, *extract), seg (B, 1, *extract) with −1 outside the image."""
        data, segs, keys = [], [], []
        dim = len(self.patch)
        for b in range(self.batch_size):
            case = self._data[np.random.randint(len(self._data))]
            try:
                arr, seg, center = _case_slice(case, dim, self._center(case, b >= self.batch_size - self.n_forced))
                data.append(crop_padded(arr, center, self.extract, 0.0))
                segs.append(crop_padded(seg[None], center, self.extract, -1))
            except Exception as exc:  # name the case, whatever went wrong in reading it
                raise RuntimeError(f"while loading case {case.case_id}: {exc}") from exc
            keys.append(case.case_id)
        return {"data": np.stack(data).astype(np.float32), "seg": np.stack(segs).astype(np.float32), "keys": keys}


@dataclass
class FindingRef:
    """A finding to train or validate on: its case, voxel position in the preprocessed array, label."""

    case: CaseArrays
    index: np.ndarray
    label: int
    finding_id: str


def findings_of(cases: list[CaseArrays]) -> list[FindingRef]:
    """Every finding with a position (whole-image findings use the image centre)."""
    out = []
    for c in cases:
        for f in c.props.get("findings", []):
            idx = np.asarray(f["index"] if f["index"] is not None else [(n - 1) / 2 for n in c.data.shape[1:]], float)
            out.append(FindingRef(c, idx, int(f["label"]), str(f["finding_id"])))
    return out


class ROIBatches(SlimDataLoaderBase):
    """Class-balanced regions of interest centred (with jitter) on findings, for lesion classification."""

    def __init__(self, findings: list[FindingRef], extract: Sequence[int], batch_size: int, patch: Sequence[int],
                 jitter: float = 0.1) -> None:
        super().__init__(findings, batch_size)
        self.extract, self.patch, self.jitter = list(extract), list(patch), jitter
        self.by_class = {c: [f for f in findings if f.label == c] for c in sorted({f.label for f in findings})}

    def generate_train_batch(self) -> dict[str, Any]:
        """One batch: data (B, C, *extract), target (B,) class labels."""
        classes = list(self.by_class)
        data, target, keys = [], [], []
        for _ in range(self.batch_size):
            pool = self.by_class[classes[np.random.randint(len(classes))]]
            f = pool[np.random.randint(len(pool))]
            shift = (np.random.uniform(-1, 1, len(self.patch)) * self.jitter * np.asarray(self.patch))
            try:
                data.append(crop_padded(f.case.data, f.index + shift, self.extract, 0.0))
            except Exception as exc:
                raise RuntimeError(f"while loading case {f.case.case_id}: {exc}") from exc
            target.append(f.label)
            keys.append(f"{f.case.case_id}/{f.finding_id}")
        return {"data": np.stack(data).astype(np.float32), "target": np.asarray(target), "keys": keys}


def num_augmentation_workers(device_type: str) -> int:
    """Background augmentation processes: XTLUNET_n_proc_DA, else a default for the device."""
    env = os.environ.get("XTLUNET_n_proc_DA") or os.environ.get("nnUNet_n_proc_DA")
    if env is not None:
        try:
            return max(0, int(env))
        except ValueError:
            raise XtlunetError(f"XTLUNET_n_proc_DA='{env}' is not a number", fix="set it to an integer, e.g. 4") from None
    cpus = os.cpu_count() or 1
    return min(8, max(1, cpus - 2)) if device_type == "cuda" else (1 if cpus >= 4 else 0)
