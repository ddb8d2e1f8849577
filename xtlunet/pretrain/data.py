"""2D pretraining data: breast-region crop, intensity normalisation, resize, grouped validation split."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from xtlunet.dataset.findings import read_findings
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.integrity import grid_problem
from xtlunet.dataset.io import read_image
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError
from xtlunet.utils.parallel import map_cases

NORMALIZATION = "breast-region crop, clip to the region's 0.5–99.5 percentiles, z-score inside the region, resize"


@dataclass
class ImageSet:
    """Preprocessed 2D images (N, C, H, W), whole-image labels and/or masks (N, H, W), patient groups."""

    case_ids: list[str]
    images: np.ndarray
    labels: np.ndarray | None
    masks: np.ndarray | None
    groups: list[str]
    crop_fractions: list[float] = field(default_factory=list)

    def subset(self, idx: Sequence[int]) -> "ImageSet":
        """The images at positions idx."""
        idx = list(idx)
        return ImageSet([self.case_ids[i] for i in idx], self.images[idx],
                        None if self.labels is None else self.labels[idx],
                        None if self.masks is None else self.masks[idx], [self.groups[i] for i in idx])


def breast_box(image: np.ndarray, margin: float = 0.02) -> list[list[int]]:
    """Bounding box of the largest bright connected region (the breast), with a small margin."""
    hi = float(np.percentile(image, 99))
    lo = float(image.min())
    mask = image > lo + 0.05 * (hi - lo)
    lab, n = ndimage.label(mask)
    if n == 0:
        return [[0, s] for s in image.shape]
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    region = lab == (int(np.argmax(sizes)) + 1)
    box = []
    for axis, size in enumerate(image.shape):
        hit = np.flatnonzero(region.any(axis=1 - axis))
        pad = int(round(margin * size))
        box.append([max(0, int(hit[0]) - pad), min(size, int(hit[-1]) + 1 + pad)])
    return box


def normalize_region(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Clip to the region's 0.5–99.5 percentiles and z-score with the region's statistics."""
    vals = image[region] if region.any() else image.ravel()
    lo, hi = np.percentile(vals, [0.5, 99.5])
    clipped = np.clip(image, lo, hi)
    v = np.clip(vals, lo, hi)
    return ((clipped - v.mean()) / max(float(v.std()), 1e-8)).astype(np.float32)


def resize(arr: np.ndarray, size: Sequence[int], order: int) -> np.ndarray:
    """Resize a 2D array to `size` (voxel-centre aligned)."""
    f = [s / a for s, a in zip(size, arr.shape)]
    out = ndimage.zoom(arr, f, order=order, mode="nearest", grid_mode=True)
    return out[: size[0], : size[1]]


def prepare_image(channels: list[np.ndarray], mask: np.ndarray | None, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Crop to the breast (found on channel 0), normalise each channel, resize; returns image, mask, crop fraction."""
    box = breast_box(channels[0])
    sl = tuple(slice(a, b) for a, b in box)
    region_full = channels[0] > channels[0].min() + 0.05 * (np.percentile(channels[0], 99) - channels[0].min())
    region = region_full[sl]
    out = np.stack([resize(normalize_region(c[sl].astype(np.float32), region), size, 1) for c in channels])
    m = None if mask is None else resize((mask[sl] > 0).astype(np.float32), size, 1) >= 0.5
    frac = float(np.prod([b - a for a, b in box]) / np.prod(channels[0].shape))
    return out, m, frac


def _load_one(args: tuple[list[Path], Path | None, Sequence[int]]) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Read and prepare one case (runs in a worker); further channels and the mask must lie on channel 0's grid."""
    files, label_file, size = args
    images = [read_image(f, 2) for f in files]
    mask = read_image(label_file, 2) if label_file is not None else None
    for path, (_, grid) in [*zip(files[1:], images[1:]), *([(label_file, mask)] if mask is not None else [])]:
        refuse_other_grid(path, grid, files[0], images[0][1], is_label=path == label_file)
    return prepare_image([a.astype(np.float32) for a, _ in images], None if mask is None else mask[0], size)


def refuse_other_grid(path: Path, grid: Geometry, ref_path: Path, ref_grid: Geometry, is_label: bool) -> None:
    """Refuse a channel or mask off channel 0's grid: cropped and resized with channel 0's box, it would shift."""
    problem = grid_problem(path, grid, ref_path, ref_grid, is_label)
    if problem is not None:
        raise problem.error()


def load_image_set(spec: DatasetSpec, task: str, size: Sequence[int], num_workers: int = 1) -> ImageSet:
    """Read every training image of a 2D dataset for classification (findings) or segmentation (labelsTr).

    The dataset is assumed checked (trainers.pretrain2d.check_pretraining_dataset).
    """
    cases = spec.cases("Tr")
    if not cases:
        raise XtlunetError("the dataset has no training images", path=spec.root / "imagesTr", fix="add images")
    labels, groups = None, [c.case_id for c in cases]
    if task == "classification":
        by_case = {f.case_id: f for f in read_findings(spec.findings_path, spec.classes)}
        missing = [c.case_id for c in cases if c.case_id not in by_case]
        if missing:
            raise XtlunetError(f"{len(missing)} images have no label in findings.csv (e.g. {missing[0]})",
                               path=spec.findings_path, fix="add one row with empty x,y,z per image")
        labels = np.array([by_case[c.case_id].label for c in cases])
        groups = [by_case[c.case_id].patient_id for c in cases]
    label_dir = spec.root / "labelsTr"
    with_masks = task == "segmentation"
    jobs = [(c.image_files, (label_dir / f"{c.case_id}{spec.file_ending}") if with_masks else None, size) for c in cases]
    res = map_cases(_load_one, jobs, num_workers, desc="load 2D images")
    masks = np.stack([r[1] for r in res]).astype(np.int16) if with_masks else None
    return ImageSet([c.case_id for c in cases], np.stack([r[0] for r in res]), labels, masks, groups,
                    [r[2] for r in res])


def validation_split(data: ImageSet, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train/validation indices grouped by patient (stratified by label when there are labels)."""
    n = len(data.case_ids)
    if n < 4:
        raise XtlunetError(f"only {n} images: too few for a validation split", fix="add images (at least 4)")
    idx = np.arange(n)
    if data.labels is not None and len(set(data.groups)) >= 2 / max(fraction, 1e-3):
        k = max(2, int(round(1 / fraction)))
        split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        tr, va = next(split.split(idx, data.labels, data.groups))
    else:
        tr, va = next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(idx, groups=data.groups))
    return sorted(tr.tolist()), sorted(va.tolist())
