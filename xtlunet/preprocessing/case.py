"""Preprocess one case for one configuration: reorient (if planned), transpose, crop, normalise, resample, locations."""
from __future__ import annotations

from typing import Any

import numpy as np

from xtlunet.dataset.findings import Finding
from xtlunet.dataset.loading import LoadedCase, reoriented
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.preprocessing.crop import crop_case
from xtlunet.preprocessing.normalize import normalize_channel
from xtlunet.preprocessing.resample import anisotropic_axis, new_shape, resample_data, resample_seg

MAX_LOCATIONS = 10000


def target_spacing_for(conf: ConfigurationPlan, spacing: list[float]) -> list[float]:
    """Full target spacing of the stored array (a 2d configuration of a 3D dataset keeps the depth spacing)."""
    if conf.dim < len(spacing):
        return [spacing[0], *conf.spacing]
    return list(conf.spacing)


def map_index(index: np.ndarray, bbox: list[list[int]], cropped: list[int], resampled: list[int]) -> np.ndarray:
    """Map a continuous (transposed) index of the original grid into the preprocessed grid."""
    start = np.array([b[0] for b in bbox], float)
    scale = np.asarray(resampled, float) / np.asarray(cropped, float)
    return (np.asarray(index, float) - start + 0.5) * scale - 0.5


def class_locations(seg: np.ndarray, labels: list[int], rng: np.random.Generator) -> dict[str, list[list[int]]]:
    """Up to MAX_LOCATIONS random voxel indices per foreground label (for oversampling)."""
    out: dict[str, list[list[int]]] = {}
    for label in labels:
        idx = np.argwhere(seg == label)
        if len(idx) > MAX_LOCATIONS:
            idx = idx[rng.choice(len(idx), MAX_LOCATIONS, replace=False)]
        out[str(label)] = idx.astype(int).tolist()
    return out


def preprocess_loaded(lc: LoadedCase, plans: Plans, conf: ConfigurationPlan,
                      findings: list[Finding], foreground: list[int]) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Turn a loaded case into (data, seg, properties) as the configuration says (reoriented first if planned)."""
    if plans.reorient:
        lc = reoriented(lc)
    order = plans.transpose_forward
    data = lc.data.transpose([0] + [a + 1 for a in order])
    seg = None if lc.seg is None else lc.seg.transpose(order)
    spacing = [lc.geometry.spacing[a] for a in order]
    shape_before = list(data.shape[1:])
    data, seg, mask, bbox = crop_case(data, seg)
    if seg is not None:  # background outside the body mask is −1 (nnU-Net's): training masks the image there
        seg = np.where((seg == 0) & ~mask, -1, seg).astype(np.int16)
    cropped = list(data.shape[1:])
    norm = [normalize_channel(data[c], s, mask if m else None, plans.foreground_intensity_properties[str(c)])
            for c, (s, m) in enumerate(zip(conf.normalization, conf.use_mask_for_norm))]
    data = np.stack(norm)
    target = target_spacing_for(conf, spacing)
    shape = new_shape(cropped, spacing, target)
    sep = anisotropic_axis(spacing, conf.anisotropy_threshold)
    if sep is None:
        sep = anisotropic_axis(target, conf.anisotropy_threshold)
    data = resample_data(data, shape, sep)
    if seg is not None:
        seg = resample_seg(seg, shape, sep).astype(np.int16)
    props: dict[str, Any] = {
        "case_id": lc.case_id, "geometry": lc.input_geometry().to_json(), "reorientation": lc.reorientation_record(),
        "transpose_forward": order,
        "shape_before_crop": shape_before, "bbox": bbox, "shape_after_crop": cropped,
        "shape_after_resample": shape, "spacing": spacing, "target_spacing": target,
        "separate_axis": sep, "notes": lc.notes,
    }
    if seg is not None:
        props["class_locations"] = class_locations(seg, foreground, np.random.default_rng(0))
    if findings:
        props["findings"] = [_finding_props(f, lc, order, bbox, cropped, shape) for f in findings]
    return data, seg, props


def _finding_props(f: Finding, lc: LoadedCase, order: list[int], bbox: list[list[int]],
                   cropped: list[int], shape: list[int]) -> dict[str, Any]:
    """A finding with its voxel position in the preprocessed array (None for whole-image labels)."""
    pos = None
    if f.position is not None:
        idx = lc.geometry.world_to_index(f.position)[order]
        pos = [round(float(v), 3) for v in map_index(idx, bbox, cropped, shape)]
    return {"finding_id": f.finding_id, "patient_id": f.patient_id, "label": f.label,
            "world": list(f.position) if f.position else None, "index": pos}
