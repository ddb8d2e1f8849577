"""Reading and writing images with their exact geometry (SimpleITK: NIfTI, MHA, NRRD, PNG, DICOM)."""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.header_claims import (FIX_SIZE, FIX_SPACING, data_claim, nifti_header, size_problem,
                                           spacing_problem)
from xtlunet.errors import XtlunetError
from xtlunet.utils.atomic import atomic_path

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png", ".dcm", ".tif", ".tiff")


def file_ending(path: str | Path) -> str:
    """The image file ending of a path ('.nii.gz', '.png', ...)."""
    name = Path(path).name.lower()
    for end in SUPPORTED_ENDINGS:
        if name.endswith(end):
            return end
    return Path(path).suffix.lower()


def is_nifti(path: str | Path) -> bool:
    """Whether a path is a NIfTI file (.nii or .nii.gz)."""
    return file_ending(path) in (".nii", ".nii.gz")


def geometry_of(img: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """The Geometry of a SimpleITK image or read header (spacing/shape reversed into array order)."""
    return Geometry(spacing=tuple(float(s) for s in img.GetSpacing()[::-1]),
                    origin=tuple(float(o) for o in img.GetOrigin()),
                    direction=tuple(float(d) for d in img.GetDirection()),
                    shape=tuple(int(s) for s in img.GetSize()[::-1]))


def header_reader(path: str | Path) -> sitk.ImageFileReader:
    """A SimpleITK reader that has read the header of `path` (no pixel data); ITK's RuntimeError if it cannot."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def read_header(path: str | Path) -> Geometry:
    """The geometry of an image from its header alone; a missing, empty, unreadable or lying file is an XtlunetError."""
    return geometry_of(checked_header(Path(path)))


def checked_header(path: Path) -> sitk.ImageFileReader:
    """The read header of `path`, which every image read goes through: a missing, empty or unreadable file, a zero or
    negative spacing as stored (not as ITK repairs it), or a data size the file cannot hold raises XtlunetError."""
    _check_file(path)
    try:
        reader = header_reader(path)
    except RuntimeError as exc:
        raise XtlunetError(f"cannot read image header ({itk_message(exc)})", path=path,
                           fix="check the file is a complete, valid image (re-export or re-copy it)") from None
    header = nifti_header(path) if is_nifti(path) else None
    if (what := spacing_problem(reader, header)) is not None:
        raise XtlunetError(what, path=path, fix=FIX_SPACING)
    claim = data_claim(path, reader, header)
    if claim is not None and (what := size_problem(path, claim)) is not None:
        raise XtlunetError(what, path=path, fix=FIX_SIZE)
    return reader


def _check_file(path: Path) -> None:
    """Refuse a missing or zero-byte file with a clear error."""
    if not path.is_file():
        raise XtlunetError("image file not found", path=path, fix="check the file name and the dataset's file_ending")
    if path.stat().st_size == 0:
        raise XtlunetError("image file is empty (0 bytes)", path=path, fix="re-export or re-copy the file")


def itk_message(exc: BaseException) -> str:
    """The informative part of a SimpleITK/ITK exception text, on one short line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else "unreadable")
    line = re.sub(r"^.*?ERROR:\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", line)
    return line[:160] or "unreadable"


def read_sitk(path: str | Path, expected_ndim: int | None = None) -> sitk.Image:
    """Read an image with SimpleITK, turning every failure into an XtlunetError naming the file."""
    path = Path(path)
    checked_header(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise XtlunetError(f"cannot read image ({itk_message(exc)})", path=path,
                           fix="check the file is a complete, valid image (re-export or re-copy it)") from None
    if img.GetNumberOfComponentsPerPixel() > 1:
        if img.GetDimension() == 2 and img.GetNumberOfComponentsPerPixel() in (3, 4):
            img = _rgb_to_gray(img)
        else:
            raise XtlunetError(f"image has {img.GetNumberOfComponentsPerPixel()} components per voxel",
                               path=path, fix="store one channel per file (…_0000, …_0001)")
    if img.GetDimension() == 3 and img.GetSize()[2] == 1 and expected_ndim == 2:
        img = img[:, :, 0]
    _check_ndim(img.GetDimension(), expected_ndim, path)
    return img


def _check_ndim(ndim: int, expected_ndim: int | None, path: Path) -> None:
    """Refuse an image whose dimension is not the expected one."""
    if expected_ndim is not None and ndim != expected_ndim:
        raise XtlunetError(f"image is {ndim}D but {expected_ndim}D was expected", path=path,
                           fix=f"store each channel as its own {expected_ndim}D file")


def _rgb_to_gray(img: sitk.Image) -> sitk.Image:
    """Luminance of an RGB(A) 2D image, geometry kept."""
    arr = sitk.GetArrayFromImage(img).astype(np.float32)[..., :3]
    gray = sitk.GetImageFromArray(arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    gray.CopyInformation(img)
    return gray


def _nifti_voxels(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Voxels of a NIfTI file via nibabel, which keeps NaN/Inf and notices truncation (ITK reads both as 0)."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        arr = np.asanyarray(nib.load(str(path)).dataobj)
    except (EOFError, OSError, ValueError, zlib.error, ImageFileError) as exc:
        raise XtlunetError(f"truncated or corrupt NIfTI file ({str(exc)[:120]})", path=path,
                           fix="re-export or re-copy the complete file") from None
    return np.ascontiguousarray(arr.reshape(shape[::-1]).T)


def _nifti_header(path: Path, expected_ndim: int | None) -> Geometry | None:
    """Geometry of a single-component NIfTI file from its header alone (None for multi-component files)."""
    reader = checked_header(path)
    if reader.GetNumberOfComponents() != 1:
        return None
    geo = geometry_of(reader)
    if geo.is_single_slice() and expected_ndim == 2:
        geo = geo.without_slice_axis()
    _check_ndim(geo.ndim, expected_ndim, path)
    return geo


def read_image(path: str | Path, expected_ndim: int | None = None, check_finite: bool = True) -> tuple[np.ndarray, Geometry]:
    """Read one image: (array in numpy order (z, y, x), geometry); NIfTI voxels come through nibabel."""
    path = Path(path)
    geo = _nifti_header(path, expected_ndim) if is_nifti(path) else None
    if geo is not None:
        arr = _nifti_voxels(path, geo.shape)
    else:
        img = read_sitk(path, expected_ndim)
        arr, geo = sitk.GetArrayFromImage(img), geometry_of(img)
    if check_finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n = int((~np.isfinite(arr)).sum())
        raise XtlunetError(f"image contains {n} NaN/Inf voxels", path=path,
                           fix="replace non-finite values (e.g. with 0) before planning")
    return arr, geo


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of `array` placed on `geometry`."""
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in geometry.spacing[::-1]))
    img.SetOrigin(tuple(float(o) for o in geometry.origin))
    img.SetDirection(tuple(float(d) for d in geometry.direction))
    return img


def write_image(path: str | Path, array: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """Write an image atomically with exactly the given geometry (format from the file ending)."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    img = to_sitk(array, geometry)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=compress)
