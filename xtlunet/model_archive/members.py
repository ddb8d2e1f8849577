"""Zip members of a model archive: safe names, and copying a member while hashing it."""
from __future__ import annotations

import hashlib
import re
import stat
import zipfile
import zlib
from typing import BinaryIO

CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# what reading a damaged, encrypted or oddly compressed member raises
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)


def unsafe_reason(name: str) -> str | None:
    """Why a member name may not be unpacked into a model folder (absolute, '..', odd parts), or None if it may."""
    if not name or "\x00" in name:
        return "has an empty or malformed name"
    if name.startswith("/") or _DRIVE.match(name):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash (not a portable relative path)"
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if ".." in parts:
        return "contains '..' (it would land outside the model folder)"
    if any(part in ("", ".") for part in parts):
        return "is not a plain relative path (empty or '.' parts)"
    return None


def is_symlink(info: zipfile.ZipInfo) -> bool:
    """Whether a member is stored as a symbolic link (Unix mode bits in the high word of external_attr)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def parent_folders(name: str) -> list[str]:
    """The folders a member lies in, outermost first, each ending with '/' ('a/b/c' → ['a/', 'a/b/'])."""
    parts = name.split("/")[:-1]
    return ["/".join(parts[:k + 1]) + "/" for k in range(len(parts))]


def copy_hashed(src: BinaryIO, dst: BinaryIO | None = None, limit: int | None = None) -> tuple[str, int]:
    """(sha256 hex, bytes) of what `src` yields, copied to `dst` when given; reading stops after limit + 1 bytes,
    so an entry larger than announced is caught without reading it whole."""
    digest, size = hashlib.sha256(), 0
    while limit is None or size <= limit:
        chunk = src.read(CHUNK if limit is None else min(CHUNK, limit + 1 - size))
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
    return digest.hexdigest(), size
