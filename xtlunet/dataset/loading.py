"""Load one case: all channels on channel 0's grid (resampled where needed), plus its label map."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import SimpleITK as sitk

from xtlunet.dataset.geometry import Geometry, Reorientation, closest_ras
from xtlunet.dataset.io import read_image, to_sitk
from xtlunet.dataset.spec import Case, DatasetSpec
from xtlunet.errors import XtlunetError

log = logging.getLogger("xtlunet")


@dataclass
class LoadedCase:
    """A case in memory: data (C, *spatial) float32 on channel 0's grid, optional label map.

    After `reoriented`, data/seg/geometry are in the closest RAS+ frame, `reorientation` says how they got there
    and `source_geometry` keeps the input files' geometry (the grid predictions are written on).
    """

    case_id: str
    data: np.ndarray
    geometry: Geometry
    seg: np.ndarray | None = None
    channel_geometries: list[Geometry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reorientation: Reorientation | None = None
    source_geometry: Geometry | None = None

    def input_geometry(self) -> Geometry:
        """The geometry of the input files (channel 0), whether or not the arrays were reoriented."""
        return self.source_geometry or self.geometry

    def reorientation_record(self) -> dict[str, Any] | None:
        """What reorientation did, for the case properties (None when the arrays are in the input's axis order)."""
        if self.reorientation is None:
            return None
        return {**self.reorientation.to_json(), "from": self.input_geometry().axis_codes(),
                "to": self.geometry.axis_codes(), "geometry": self.geometry.to_json()}


def load_case(case: Case, spec: DatasetSpec, ndim: int | None = None, with_label: bool = True) -> LoadedCase:
    """Read a case's channels (and label); channels on other grids are resampled onto channel 0's."""
    arrays, geos, notes = [], [], []
    for c, path in enumerate(case.image_files):
        arr, geo = read_image(path, ndim)
        ref = geos[0] if geos else geo
        geos.append(geo)
        if geo.ndim != ref.ndim:
            raise XtlunetError(f"channel {c} is {geo.ndim}D but channel 0 is {ref.ndim}D", path=path,
                               fix="store every channel of a case with the same dimension")
        if c > 0 and not geo.same_grid(ref):
            if not spec.is_classification:
                raise XtlunetError(f"channel {c} lies on another grid than channel 0 ({'; '.join(geo.mismatch(ref))})",
                                   path=path, fix="resample the channels onto one grid (allowed only for classification datasets)")
            arr = resample_onto(arr, geo, ref)
            notes.append(f"{case.case_id}: channel {c} ({spec.channel_names[c]}) resampled from spacing "
                         f"{tuple(round(s, 3) for s in geo.spacing)} onto channel 0's grid {tuple(round(s, 3) for s in ref.spacing)}")
        arrays.append(arr.astype(np.float32, copy=False))
    seg = None
    if with_label and case.label_file is not None:
        seg = _load_label(case, spec, geos[0], ndim)
    for n in notes:
        log.info(n)
    return LoadedCase(case.case_id, np.stack(arrays), geos[0], seg, geos, notes)


def reoriented(lc: LoadedCase) -> LoadedCase:
    """The case with data, label and geometry in the closest RAS+ frame (permutation and flips, exact; idempotent)."""
    if lc.reorientation is not None:
        return lc
    r = closest_ras(lc.geometry)
    seg = None if lc.seg is None else r.apply(lc.seg)
    return replace(lc, data=r.apply(lc.data, lead=1), geometry=r.geometry(lc.geometry), seg=seg, reorientation=r,
                   source_geometry=lc.geometry)


def _load_label(case: Case, spec: DatasetSpec, ref_geo: Geometry, ndim: int | None) -> np.ndarray:
    """Read and validate the label map of a case."""
    path = case.label_file
    arr, geo = read_image(path, ndim)
    bad = geo.mismatch(ref_geo)
    if bad:
        raise XtlunetError(f"label does not match its image: {'; '.join(bad)}", path=path,
                           fix="save the label with the image's geometry (same shape, spacing, origin, direction)")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise XtlunetError("label map has non-integer values", path=path, fix="store labels as integers")
    seg = arr.astype(np.int16)
    unknown = sorted(set(np.unique(seg).tolist()) - set(spec.label_values()))
    if unknown:
        raise XtlunetError(f"label values {unknown} are not declared in dataset.json labels", path=path,
                           fix="add them to \"labels\" in dataset.json or correct the mask")
    return seg


def resample_onto(arr: np.ndarray, geo: Geometry, ref: Geometry) -> np.ndarray:
    """Resample an array lying on `geo` onto the grid `ref` (linear, world-space aware; zeros outside)."""
    out = sitk.Resample(to_sitk(arr.astype(np.float32, copy=False), geo), to_sitk(np.zeros(ref.shape, np.float32), ref),
                        sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
