"""Per-file checks of the dataset integrity check: header, dimension, truncation and voxel values.

Each check returns a list of `Problem`s (empty when the file is fine) and never raises for a bad file.
"""
from __future__ import annotations

import gzip
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import SimpleITK as sitk

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import geometry_of, header_reader, is_nifti

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


def itk_message(exc: BaseException) -> str:
    """The informative part of a SimpleITK/ITK exception text, on one short line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else "unreadable")
    line = re.sub(r"^.*?ERROR:\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", line)
    return line[:160] or "unreadable"


def inspect_header(path: Path) -> ImageHeader | Problem:
    """Read one image header (no pixel data); a missing, empty or unreadable file is a Problem."""
    if not path.is_file():
        return Problem(str(path), "file not found", "check the file name and the dataset's file_ending")
    if path.stat().st_size == 0:
        return Problem(str(path), "file is empty (0 bytes)", _REREAD)
    try:
        reader = header_reader(path)
    except RuntimeError as exc:
        return Problem(str(path), f"cannot read the image header ({itk_message(exc)})",
                       f"check the file is a complete image in a format SimpleITK reads; {_REREAD}")
    return ImageHeader(path, int(reader.GetDimension()), int(reader.GetNumberOfComponents()),
                       sitk.GetPixelIDValueAsString(reader.GetPixelID()), geometry_of(reader))


def header_problems(h: ImageHeader) -> list[Problem]:
    """Empty extent, non-positive spacing or a singular direction matrix."""
    out = []
    g = h.geometry
    if any(s == 0 for s in g.shape):
        out.append(Problem(str(h.path), f"image has no voxels (shape {g.shape})", _REREAD))
    if not all(np.isfinite(s) and s > 0 for s in g.spacing):
        out.append(Problem(str(h.path), f"voxel spacing {g.spacing} is not positive",
                           "write the true voxel size (mm) into the header"))
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


_NIFTI_FLOATS = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class NiftiLayout:
    """Where the voxel data of a single-file NIfTI lies, and its dtype when floating point."""

    offset: int
    nbytes: int
    float_dtype: np.dtype | None


def nifti_layout(head: bytes) -> NiftiLayout | None:
    """The data layout of a NIfTI-1/2 file from its first 540 bytes (None if not NIfTI)."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            datatype, bitpix = struct.unpack(order + "2h", head[70:74])
            dims = struct.unpack(order + "8h", head[40:56])
            offset = struct.unpack(order + "f", head[108:112])[0]
        elif len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            datatype, bitpix = struct.unpack(order + "2h", head[12:16])
            dims = struct.unpack(order + "8q", head[16:80])
            offset = struct.unpack(order + "q", head[168:176])[0]
        else:
            continue
        n = min(max(int(dims[0]), 0), 7)
        count = int(np.prod([max(int(d), 1) for d in dims[1:1 + n]], dtype=np.int64))
        dtype = np.dtype(order + _NIFTI_FLOATS[datatype]) if datatype in _NIFTI_FLOATS else None
        return NiftiLayout(int(offset), count * max(int(bitpix), 0) // 8, dtype)
    return None


@dataclass
class NiftiScan:
    """What a raw look at a NIfTI file found: damaged data, and how many voxels are NaN/Inf."""

    damage: list[Problem]
    non_finite: int = 0


def scan_nifti(path: Path, deep: bool) -> NiftiScan:
    """Truncated data and NaN/Inf voxels of a NIfTI file, both of which ITK reads silently (as 0).

    Without `deep` only an uncompressed file's size is checked; with it the data is streamed once.
    """
    compressed = path.name.lower().endswith(".gz")
    if not is_nifti(path) or (compressed and not deep):
        return NiftiScan([])
    try:
        with (gzip.open if compressed else open)(path, "rb") as fh:
            head = fh.read(540)
            layout = nifti_layout(head)
            if layout is None:
                return NiftiScan([])
            total, bad = _stream_nifti(fh, head, layout) if deep else (path.stat().st_size, 0)
    except (EOFError, OSError, zlib.error) as exc:
        return NiftiScan([Problem(str(path), f"compressed data is truncated or corrupt "
                                             f"({type(exc).__name__}: {exc})", _REREAD)])
    expected = layout.offset + layout.nbytes
    if total < expected:
        return NiftiScan([Problem(str(path), f"file is truncated: {total} of {expected} bytes present "
                                             "(the missing voxels would silently read as 0)", _REREAD)], bad)
    return NiftiScan([], bad)


def _stream_nifti(fh: BinaryIO, head: bytes, layout: NiftiLayout) -> tuple[int, int]:
    """(bytes in the file, non-finite voxels) reading `fh` to its end, `head` being what was read already."""
    total, bad, carry = 0, 0, b""
    chunk = head
    while chunk:
        start, total = total, total + len(chunk)
        lo, hi = max(layout.offset - start, 0), min(layout.offset + layout.nbytes - start, len(chunk))
        if layout.float_dtype is not None and lo < hi:
            data = carry + chunk[lo:hi]
            usable = len(data) - len(data) % layout.float_dtype.itemsize
            values = np.frombuffer(data[:usable], dtype=layout.float_dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = data[usable:]
        chunk = fh.read(1 << 22)
    return total, bad


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
