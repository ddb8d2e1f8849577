"""Per-file checks of the dataset integrity check: header, dimension, truncation and voxel values.

Each check returns a list of `Problem`s (empty when the file is fine) and never raises for a bad file.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import SimpleITK as sitk

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.header_claims import nifti_header
from xtlunet.dataset.io import checked_header, geometry_of, is_nifti, itk_message
from xtlunet.errors import XtlunetError

_REREAD = "re-export or re-copy the file"


@dataclass
class Problem:
    """One thing wrong with a dataset: the offending file, what is wrong, and how to fix it."""

    path: str
    what: str
    fix: str

    def line(self) -> str:
        """Render as one line: 'PATH: WHAT — fix: FIX'."""
        return f"{self.path}: {self.what} — fix: {self.fix}".replace("\n", " ")

    def error(self) -> XtlunetError:
        """The problem as a user error (for the commands that stop at the first one)."""
        return XtlunetError(self.what, path=self.path, fix=self.fix)


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without its pixel data."""

    path: Path
    stored_ndim: int
    components: int
    pixel_type: str
    geometry: Geometry

    def effective_ndim(self) -> int:
        """2 for 2D images and single-slice 3D files, else the stored dimension."""
        return 2 if self.stored_ndim == 2 or self.geometry.is_single_slice() else self.stored_ndim

    def geometry_as(self, ndim: int) -> Geometry:
        """The geometry in `ndim` dimensions (drops the slice axis of a single-slice 3D file for ndim 2)."""
        g = self.geometry
        return g.without_slice_axis() if ndim == 2 and g.is_single_slice() else g


def inspect_header(path: Path) -> ImageHeader | Problem:
    """Read one image header (no pixel data); a missing, empty, unreadable or lying file is a Problem."""
    try:
        reader = checked_header(path)
    except XtlunetError as exc:
        return Problem(str(path), exc.what, exc.fix or _REREAD)
    return ImageHeader(path, int(reader.GetDimension()), int(reader.GetNumberOfComponents()),
                       sitk.GetPixelIDValueAsString(reader.GetPixelID()), geometry_of(reader))


def header_problems(h: ImageHeader) -> list[Problem]:
    """Empty extent or a singular direction matrix (the spacing is checked as stored, by io.checked_header)."""
    out = []
    g = h.geometry
    if any(s == 0 for s in g.shape):
        out.append(Problem(str(h.path), f"image has no voxels (shape {g.shape})", _REREAD))
    direction = np.asarray(g.direction, dtype=np.float64)
    n = int(round(np.sqrt(direction.size)))
    if n * n != direction.size or not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction.reshape(n, n))) < 1e-6:
        out.append(Problem(str(h.path), "direction matrix is degenerate (not invertible)",
                           "write a valid orientation (direction cosines) into the header"))
    return out


def dimension_problems(h: ImageHeader, dataset_ndim: int, decided_by: str) -> list[Problem]:
    """An image whose dimension differs from the dataset's (2D files may be stored as one-slice 3D)."""
    ok = h.stored_ndim == 3 if dataset_ndim == 3 else h.effective_ndim() == 2
    if ok:
        return []
    shape = "×".join(map(str, h.geometry.shape))
    fix = (f"store each channel as its own {dataset_ndim}D file (split a 4D series into channels)"
           if h.stored_ndim > dataset_ndim else f"re-export it as a {dataset_ndim}D image, or remove the case")
    return [Problem(str(h.path), f"image is {h.stored_ndim}D ({shape}) but the dataset is {dataset_ndim}D "
                                 f"(decided from {decided_by})", fix)]


def component_problems(h: ImageHeader, dataset_ndim: int, is_label: bool) -> list[Problem]:
    """Multi-component voxels: only 2D RGB(A) images (not labels) are allowed; they are read as grey."""
    if h.components == 1 or (not is_label and dataset_ndim == 2 and h.components in (3, 4)):
        return []
    kind = "label map" if is_label else "image"
    fix = ("store one integer label per voxel (a single-component map)" if is_label
           else "store one scalar channel per file (…_0000, …_0001); RGB is only accepted for 2D images")
    return [Problem(str(h.path), f"{kind} has {h.components} components per voxel ({h.pixel_type})", fix)]


@dataclass(frozen=True)
class NiftiLayout:
    """Where the voxel data of a single-file NIfTI lies, and its dtype when floating point."""

    offset: int
    nbytes: int
    float_dtype: np.dtype | None


def nifti_layout(path: Path) -> NiftiLayout | None:
    """The data layout a NIfTI-1/2 file's header declares, read as stored (None if it is not NIfTI)."""
    header = nifti_header(path)
    if header is None:
        return None
    dtype = header.get_data_dtype()
    count = int(np.prod([max(int(d), 1) for d in header.get_data_shape()], dtype=np.int64))
    return NiftiLayout(int(header.get_data_offset()), count * dtype.itemsize, dtype if dtype.kind == "f" else None)


@dataclass
class NiftiScan:
    """What a raw look at a NIfTI file found: damaged data, and how many voxels are NaN/Inf."""

    damage: list[Problem]
    non_finite: int = 0


def scan_nifti(path: Path, deep: bool) -> NiftiScan:
    """With `deep`, stream a NIfTI file once: corrupt compressed data and NaN/Inf voxels, which ITK reads silently
    (as 0). A file too short for its header's data size never gets here (io.checked_header refuses it)."""
    if not deep or not is_nifti(path):
        return NiftiScan([])
    layout = nifti_layout(path)
    if layout is None:
        return NiftiScan([])
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as fh:
            bad = _stream_nifti(fh, layout)
    except (EOFError, OSError, zlib.error) as exc:
        return NiftiScan([Problem(str(path), f"compressed data is truncated or corrupt "
                                             f"({type(exc).__name__}: {exc})", _REREAD)])
    return NiftiScan([], bad)


def _stream_nifti(fh: BinaryIO, layout: NiftiLayout) -> int:
    """Non-finite voxels of a NIfTI file, reading `fh` from its start to its end in 4 MiB chunks."""
    total, bad, carry = 0, 0, b""
    while chunk := fh.read(1 << 22):
        start, total = total, total + len(chunk)
        lo, hi = max(layout.offset - start, 0), min(layout.offset + layout.nbytes - start, len(chunk))
        if layout.float_dtype is not None and lo < hi:
            data = carry + chunk[lo:hi]
            usable = len(data) - len(data) % layout.float_dtype.itemsize
            values = np.frombuffer(data[:usable], dtype=layout.float_dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = data[usable:]
    return bad


def read_pixels(path: Path) -> np.ndarray | Problem:
    """The voxel array of an image (numpy order); an unreadable file is a Problem."""
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        return Problem(str(path), f"cannot read the voxel data ({itk_message(exc)})",
                       f"check the file is complete; {_REREAD}")


def finite_problems(path: Path, arr: np.ndarray, kind: str = "image") -> list[Problem]:
    """NaN/Inf voxels in a floating-point array."""
    if arr.dtype.kind not in "fc":
        return []
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    return [non_finite_problem(path, bad, kind)] if bad else []


def non_finite_problem(path: Path, count: int, kind: str, note: str = "") -> Problem:
    """The Problem of `count` NaN/Inf voxels."""
    return Problem(str(path), f"{kind} contains {count} NaN/Inf voxels{note}",
                   "replace non-finite values (e.g. with 0) and re-save the file")


def label_value_problems(path: Path, arr: np.ndarray, declared: Sequence[int]) -> list[Problem]:
    """Non-integer or undeclared values in a label map (NaN/Inf are finite_problems' business)."""
    out = []
    values = np.unique(arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr)
    if arr.dtype.kind == "f":
        fractional = values[values != np.round(values)]
        if fractional.size:
            shown = ", ".join(f"{v:.4g}" for v in fractional[:3])
            out.append(Problem(str(path), f"label map holds non-integer values (e.g. {shown})",
                               "store integer labels (e.g. uint8); resample masks with nearest-neighbour "
                               "interpolation"))
        values = values[values == np.round(values)]
    unknown = sorted(set(int(v) for v in values) - set(declared))
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (", …" if len(unknown) > 10 else "")
        out.append(Problem(str(path), f"label values {shown} are not declared in dataset.json labels "
                                      f"(declared: {', '.join(map(str, declared))})",
                           "relabel those voxels or add the values to \"labels\" in dataset.json"))
    return out
