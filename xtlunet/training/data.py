"""Training batches from the preprocessed arrays (memory-mapped): foreground-oversampled patches and finding ROIs."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase

from xtlunet.dataset.findings import finding_center
from xtlunet.errors import XtlunetError
from xtlunet.utils.arrays import crop_box, crop_padded
from xtlunet.utils.atomic import read_json


@dataclass
class CaseArrays:
    """One preprocessed case: data (C, *spatial) and seg memory-mapped, plus its properties (and, for a cascade
    stage, the previous stage's label map on the same grid)."""

    case_id: str
    data: np.ndarray
    seg: np.ndarray | None
    props: dict[str, Any]
    locations: dict[int, np.ndarray] = field(default_factory=dict)
    previous: np.ndarray | None = None


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


OVERSAMPLE_FOREGROUND = 0.33   # fraction of every (global) batch centred on a foreground voxel (nnU-Net's)


def forced_count(batch_size: int, oversample: float = OVERSAMPLE_FOREGROUND) -> int:
    """How many of a batch's samples are forced onto foreground: its last B − round(B·(1 − oversample)), at least
    one when oversampling (a batch of one is then always foreground, as a batch of one can only be)."""
    if oversample <= 0:
        return 0
    return max(1, batch_size - int(round(batch_size * (1 - oversample))))


def rank_share(global_batch: int, world: int, rank: int, oversample: float = OVERSAMPLE_FOREGROUND) -> tuple[int, int]:
    """(batch size, forced-foreground samples) of one DDP rank: the global batch split as evenly as possible,
    the forced samples being the global batch's last ones, so the fraction holds across ranks, not per rank."""
    sizes = [max(1, global_batch // world + (r < global_batch % world)) for r in range(world)]
    start, total = sum(sizes[:rank]), sum(sizes)
    first_forced = total - forced_count(total, oversample)
    return sizes[rank], sum(1 for i in range(start, start + sizes[rank]) if i >= first_forced)


def box_start(shape: Sequence[int], extract: Sequence[int], patch: Sequence[int],
              voxel: Sequence[float] | None = None) -> np.ndarray:
    """Lower corner of an `extract`-sized box: uniform within nnU-Net's bounds (the central `patch` lies inside an
    image of `shape` whenever the image is at least patch-sized), or centred on `voxel` and clipped at the lower
    bound only, as nnU-Net: the voxel stays central near the image's far side, so the foreground moves within the
    patch even where the image is smaller than it (clipping both sides pins such an image to the patch centre)."""
    s, e, p = (np.asarray(v, dtype=np.int64) for v in (shape, extract, patch))
    need = np.maximum(e - p, e - s)          # how far the box may reach past the image, both sides together
    lo = -(need // 2)
    hi = s + need // 2 + need % 2 - e
    if voxel is None:
        return np.array([np.random.randint(a, b + 1) for a, b in zip(lo, hi)])
    return np.maximum(np.round(np.asarray(voxel, float)).astype(np.int64) - e // 2, lo)


class SegmentationBatches(SlimDataLoaderBase):
    """Patches inside the image (nnU-Net's bounds); the last `forced` samples of every batch are centred on a
    foreground voxel (oversampling). A 2D configuration on 3D data cuts one slice per sample."""

    def __init__(self, cases: list[CaseArrays], patch: Sequence[int], batch_size: int, extract: Sequence[int],
                 oversample: float = OVERSAMPLE_FOREGROUND, forced: int | None = None) -> None:
        super().__init__(cases, batch_size)
        self.patch, self.extract = list(patch), list(extract)
        self.n_forced = forced_count(batch_size, oversample) if forced is None else int(forced)

    @staticmethod
    def _foreground_voxel(case: CaseArrays) -> np.ndarray | None:
        """A stored foreground location of a randomly chosen label (None when the case has none)."""
        labels = [k for k, v in case.locations.items() if len(v)]
        if not labels:
            return None
        locs = case.locations[labels[np.random.randint(len(labels))]]
        return locs[np.random.randint(len(locs))].astype(float)

    def _sample(self, case: CaseArrays, forced: bool) -> tuple[np.ndarray, np.ndarray]:
        """(data, seg) of one sample: the box of `extract` voxels, padded with 0 / −1 outside the image; a cascade
        case's previous-stage labels become seg channel 1 (0 outside the image), augmented with the image."""
        voxel = self._foreground_voxel(case) if forced else None
        arr, seg, prev = case.data, case.seg, case.previous
        if arr.ndim - 1 != len(self.patch):          # a 2D configuration on 3D data: one slice
            z = int(voxel[0]) if voxel is not None else np.random.randint(arr.shape[1])
            arr, seg, voxel = arr[:, z], seg[z], None if voxel is None else voxel[1:]
            prev = None if prev is None else prev[z]
        start = box_start(arr.shape[1:], self.extract, self.patch, voxel)
        segs = crop_box(seg[None], start, self.extract, -1)
        if prev is not None:
            segs = np.concatenate([segs, crop_box(prev[None], start, self.extract, 0).astype(segs.dtype)])
        return crop_box(arr, start, self.extract, 0.0), segs

    def generate_train_batch(self) -> dict[str, Any]:
        """One batch: data (B, C, *extract), seg (B, 1, *extract) with −1 outside the image (a cascade's: B, 2, …)."""
        data, segs, keys = [], [], []
        for b in range(self.batch_size):
            case = self._data[np.random.randint(len(self._data))]
            try:
                d, sg = self._sample(case, b >= self.batch_size - self.n_forced)
            except Exception as exc:  # name the case, whatever went wrong in reading it
                raise RuntimeError(f"while loading case {case.case_id}: {exc}") from exc
            data.append(d)
            segs.append(sg)
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
            idx = finding_center(f["index"], c.data.shape)
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
