"""What an image header claims, read as stored: voxel spacing and the size of the voxel data.

ITK reads a zero NIfTI pixdim as 1 mm and a negative one as its absolute value, and nibabel.load "fixes" the same
fields; so the NIfTI header is read here with nibabel without its fixes. The data size a header claims is compared
with the file before any voxel is read: a truncated file, or a header claiming 4000³ voxels, is refused in O(1)
(a .nii.gz file is streamed, never held in memory, only when its gzip trailer disagrees with its header).
"""
from __future__ import annotations

import gzip
import io
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

AXES = "xyz"
MAX_DEFLATE_RATIO = 1032  # deflate (gzip, zlib, PNG) never stores more than 1032 bytes in one compressed byte
_SLACK = 1024  # bytes of headers and block overhead allowed on top of that bound
_REREAD = "re-export or re-copy the complete file (or correct the image size in its header)"


@dataclass(frozen=True)
class DataClaim:
    """Where a header says its voxels lie in the same file, and how many bytes they take."""

    offset: int  # first voxel byte (in the decompressed stream of a .gz file)
    nbytes: int  # voxel bytes the header claims
    packing: str  # "raw", "gzip" (the whole file: .nii.gz) or "deflate" (the voxels only: .mha, .nrrd, .png)
    shape: tuple[int, ...]  # the claimed extent, for messages (index order x, y, z)


def nifti_header(path: Path):
    """The NIfTI-1/2 header of a .nii/.nii.gz file exactly as stored (no nibabel fixes); None if it has none."""
    import nibabel as nib

    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as fh:
            head = fh.read(540)
        for cls in (nib.Nifti2Header, nib.Nifti1Header):
            if cls.may_contain_header(head):
                return cls.from_fileobj(io.BytesIO(head), check=False)
    except (EOFError, OSError, ValueError, zlib.error, nib.spatialimages.HeaderDataError):
        return None
    return None


def spacing_problem(reader: sitk.ImageFileReader, header=None) -> str | None:
    """What is wrong with the stored spacing (zero, negative or not finite on an axis longer than one voxel);
    `header`: the file's raw NIfTI header, whose pixdim is checked instead of the spacing ITK made of it."""
    size = reader.GetSize()
    if header is not None:
        n = min(int(header["dim"][0]), 3)
        stored = [(float(header["pixdim"][i + 1]), f" (pixdim[{i + 1}])") for i in range(n)]
    else:
        stored = [(float(s), "") for s in reader.GetSpacing()]
    bad = [f"{value:g} on axis {AXES[i]}{field}" for i, (value, field) in enumerate(stored[:3])
           if i < len(size) and size[i] > 1 and not (math.isfinite(value) and value > 0)]
    if not bad:
        return None
    return f"the header gives voxel spacing {' and '.join(bad)}: a spacing must be a positive size in mm"


def data_claim(path: Path, reader: sitk.ImageFileReader, header=None) -> DataClaim | None:
    """The voxel data the header claims to hold in this file (`header`: its raw NIfTI header, for NIfTI files);
    None where that is not known (e.g. the voxels in a separate .raw file)."""
    import nibabel as nib

    if header is not None:
        try:
            dims = tuple(int(d) for d in header["dim"][1:1 + min(max(int(header["dim"][0]), 0), 7)])
            nbytes = math.prod(dims) * header.get_data_dtype().itemsize
        except (nib.spatialimages.HeaderDataError, ValueError, TypeError):
            return None
        packing = "gzip" if path.name.lower().endswith(".gz") else "raw"
        return DataClaim(int(header.get_data_offset()), nbytes, packing, dims) if min(dims, default=0) >= 0 else None
    shape = tuple(int(s) for s in reader.GetSize())
    nbytes = math.prod(shape) * _voxel_bytes(reader)
    name = path.name.lower()
    if name.endswith(".png"):
        return DataClaim(0, nbytes, "deflate", shape)
    if name.endswith(".mha") or name.endswith(".nrrd"):
        found = _text_header(path, name.endswith(".mha"))
        return DataClaim(found[0], nbytes, found[1], shape) if found else None
    return None


def _voxel_bytes(reader: sitk.ImageFileReader) -> int:
    """Bytes of one voxel (all components) of the pixel type a header declares."""
    one = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
    return sitk.GetArrayViewFromImage(one).itemsize * reader.GetNumberOfComponents()


def _text_header(path: Path, metaimage: bool) -> tuple[int, str] | None:
    """(data offset, 'raw' or 'deflate') of a MetaImage (.mha) or NRRD file with its voxels inside; else None."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16).decode("latin-1")
    if metaimage:
        m = re.search(r"^ElementDataFile\s*=\s*(\S+)[ \t]*\r?\n", head, re.M)
        if not m or m.group(1) != "LOCAL" or re.search(r"^HeaderSize\s*=", head, re.M):
            return None
        compressed = re.search(r"^CompressedData\s*=\s*True", head, re.M | re.I)
        return m.end(), "deflate" if compressed else "raw"
    m = re.search(r"\r?\n\r?\n", head)
    fields = dict(re.findall(r"^([^:#\n]+):[ \t]*(.*?)\s*$", head[:m.start()] if m else "", re.M))
    encoding = fields.get("encoding", "").lower()
    if not m or {"data file", "datafile", "line skip", "byte skip"} & {k.strip().lower() for k in fields}:
        return None
    packing = {"raw": "raw", "gzip": "deflate", "gz": "deflate"}.get(encoding)
    return (m.end(), packing) if packing else None


def size_problem(path: Path, claim: DataClaim) -> str | None:
    """Why the file cannot hold the voxels its header claims (truncated, or a header that lies); None if it can."""
    size = path.stat().st_size
    expected = claim.offset + claim.nbytes
    extent = "×".join(map(str, claim.shape))
    if claim.packing == "raw":
        if size >= expected:
            return None
        return (f"file is truncated: its header claims {extent} voxels ({_human(expected)} with the header) but the "
                f"file holds {_human(size)}")
    stored = size - (claim.offset if claim.packing == "deflate" else 0)
    if claim.nbytes > MAX_DEFLATE_RATIO * max(stored, 0) + _SLACK:
        most = _human(MAX_DEFLATE_RATIO * stored)
        return (f"file is truncated or its header lies: the header claims {extent} voxels ({_human(claim.nbytes)}), "
                f"more than {_human(stored)} of compressed data can hold (at most {most})")
    if claim.packing != "gzip" or _gzip_trailer_size(path) == expected % 2 ** 32:
        return None
    try:
        total = _gunzipped_size(path)  # the trailer disagrees: a truncated file, or a multi-member gzip (valid)
    except (EOFError, OSError, zlib.error) as exc:
        return f"compressed data is truncated or corrupt ({type(exc).__name__}: {str(exc)[:100]})"
    if total >= expected:
        return None
    return (f"file is truncated: it decompresses to {_human(total)} but its header claims {extent} voxels "
            f"({_human(expected)} with the header)")


def _gzip_trailer_size(path: Path) -> int:
    """ISIZE, the last 4 bytes of a gzip file: the uncompressed size of its last member modulo 2³²."""
    with open(path, "rb") as fh:
        fh.seek(-4, 2)
        return int.from_bytes(fh.read(4), "little")


def _gunzipped_size(path: Path) -> int:
    """Bytes a gzip file decompresses to, streamed in 4 MiB chunks (never held in memory)."""
    total = 0
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            total += len(chunk)
    return total


def _human(nbytes: int) -> str:
    """A byte count for messages: '812 bytes', '1.5 MB', '256.0 GB'."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


FIX_SPACING = ("write the true voxel size in mm of every axis into the header and re-save the file "
               "(xtlunet does not guess 1 mm)")
FIX_SIZE = _REREAD
