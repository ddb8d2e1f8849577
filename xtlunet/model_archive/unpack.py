"""`xtlunet import-model`: check a model archive whole, then unpack it into $XTLUNET_results atomically.

Every check runs before anything is written: the card's format version, each member's name (no absolute path,
no '..', no symbolic link, nothing outside the model folder), no member missing or extra versus the card, and
each member's size and sha256. The files are then written into a temp folder beside the target (hashed again as
they are written) and renamed into place. A cascade stage's archive unpacks into two model folders, the cascade's
and its lowres model's (the members under previous_stage/): both are placed, or neither.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from xtlunet.errors import XtlunetError
from xtlunet.model_archive.card import CARD_NAME, PREVIOUS_DIR
from xtlunet.model_archive.card_check import read_card, refuse
from xtlunet.model_archive.members import READ_ERRORS, copy_hashed, is_symlink, parent_folders, unsafe_reason
from xtlunet.utils.console import progress_bar


@dataclass
class ImportResult:
    """Where the model was unpacked, and its card."""

    folder: Path
    card: dict[str, Any]
    replaced: bool
    previous: Path | None = None   # the lowres model folder unpacked beside a cascade stage


@contextlib.contextmanager
def _open_zip(archive: Path) -> Iterator[zipfile.ZipFile]:
    """The archive opened for reading; a missing file or a non-zip is one line."""
    if not archive.is_file():
        raise XtlunetError("model archive not found" if not archive.exists() else "model archive is not a file",
                           path=archive, fix="give the zip written by 'xtlunet export-model'")
    try:
        zf = zipfile.ZipFile(archive)
    except READ_ERRORS as exc:
        raise refuse(archive, f"not a readable zip file ({exc})", "give a zip written by 'xtlunet export-model' (copy "
                     "it again if it is truncated)") from None
    with zf:
        yield zf


def _check_members(zf: zipfile.ZipFile, card: dict[str, Any], archive: Path) -> list[zipfile.ZipInfo]:
    """The members to unpack, after refusing unsafe names, links, duplicates and members missing or extra versus
    the card."""
    files, seen, out = card["files"], set(), []
    folders = {p for name in files for p in parent_folders(name)}
    for info in zf.infolist():
        name = info.filename
        reason = unsafe_reason(name) or ("is a symbolic link" if is_symlink(info) else None)
        if reason:
            raise refuse(archive, f"member '{name}' {reason}")
        if name in seen:
            raise refuse(archive, f"member '{name}' appears twice in the archive")
        seen.add(name)
        if name not in files and name != CARD_NAME and not (info.is_dir() and name in folders):
            raise refuse(archive, f"member '{name}' is not listed in the model card (an extra file)")
        if not info.is_dir():
            out.append(info)
    missing = sorted(set(files) - seen)
    if missing:
        raise refuse(archive, f"member '{missing[0]}' listed in the model card is missing from the archive")
    return out


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: Path, card: dict[str, Any],
                 dst: BinaryIO | None = None) -> None:
    """Read one member (copying it to `dst`), refusing a size or sha256 other than the card's."""
    if info.filename == CARD_NAME:
        expected = None
    else:
        expected = card["files"][info.filename]
        if info.file_size != expected["size"]:
            raise refuse(archive, f"member '{info.filename}' is {info.file_size} bytes, the model card says "
                         f"{expected['size']} (tampered or damaged)")
    try:
        with zf.open(info) as src:
            sha, size = copy_hashed(src, dst, None if expected is None else expected["size"])
    except READ_ERRORS as exc:
        raise refuse(archive, f"member '{info.filename}' cannot be read ({type(exc).__name__}: {exc})") from None
    if expected is not None and (sha, size) != (expected["sha256"], expected["size"]):
        raise refuse(archive, f"member '{info.filename}' does not match the sha256 in the model card (tampered "
                     "or damaged)")


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse an existing model folder without --overwrite, and one a running xtlunet job holds a lock in."""
    from xtlunet.utils.lock import LOCK_NAME, LockRecord

    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise XtlunetError("a file or link is in the way of the model folder", path=target,
                           fix="move it away, then import again")
    if not overwrite:
        raise XtlunetError("the model folder already exists", path=target,
                           fix="add --overwrite to replace it, or move it away first")
    for lock in target.rglob(LOCK_NAME):
        held = LockRecord.parse(lock.read_text(errors="replace"))
        if held is None or not held.is_stale():
            raise XtlunetError("the model folder is in use by another xtlunet run", path=lock,
                               fix="wait for that run to finish, then import again")


def _new_folder(parent: Path, stem: str) -> Path:
    """A new uniquely named hidden folder in `parent` (the umask's permissions, as mkdir gives)."""
    while True:
        path = parent / f".{stem}.{secrets.token_hex(4)}.importing"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _unpack(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], card: dict[str, Any], archive: Path,
            tmp: Path, prefix: str = "") -> None:
    """Write every member under `tmp` (its name without `prefix`), hashing each again as it is written."""
    for info in progress_bar(members, desc=f"import {card['model']}", unit="file"):
        path = tmp.joinpath(*info.filename[len(prefix):].split("/"))
        if tmp.resolve() not in path.resolve().parents:
            raise refuse(archive, f"member '{info.filename}' lies outside the model folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as dst:
            _read_member(zf, info, archive, card, dst)


def _move_into_place(tmp: Path, target: Path) -> Path | None:
    """Rename the unpacked folder onto the target; an existing one is swapped out first and its new name returned
    (the caller removes it, or renames it back)."""
    if not target.exists():
        try:
            os.rename(tmp, target)
        except OSError:
            if target.exists():
                raise XtlunetError("the model folder appeared while importing (another import?)", path=target,
                                   fix="add --overwrite to replace it") from None
            raise
        return None
    old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.replaced")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    return old


def _move_all(moves: list[tuple[Path, Path]]) -> list[bool]:
    """Rename each unpacked folder onto its target, all or none: after a failed rename the ones already placed go
    back to their temp folders and the folders they replaced return; replaced folders are removed only at the end.
    Returns, per target, whether it replaced one."""
    placed: list[tuple[Path, Path, Path | None]] = []
    try:
        for tmp, target in moves:
            placed.append((tmp, target, _move_into_place(tmp, target)))
    except BaseException:
        for tmp, target, old in reversed(placed):
            os.rename(target, tmp)
            if old is not None:
                os.rename(old, target)
        raise
    for _, _, old in placed:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return [old is not None for _, _, old in placed]


def _split(members: list[zipfile.ZipInfo], card: dict[str, Any]) -> tuple[list[zipfile.ZipInfo], list[zipfile.ZipInfo]]:
    """(the model's members, the carried lowres model's: those under PREVIOUS_DIR/ when the card names one)."""
    if not card.get("previous_model"):
        return members, []
    prefix = f"{PREVIOUS_DIR}/"
    return ([i for i in members if not i.filename.startswith(prefix)],
            [i for i in members if i.filename.startswith(prefix)])


def import_model(archive: str | Path, overwrite: bool = False) -> ImportResult:
    """Check the archive, then unpack it to $XTLUNET_results/DATASET/TRAINER__PLANS__CONFIG atomically (a cascade
    stage's lowres model beside it, both or neither)."""
    from xtlunet.paths import results_root

    archive = Path(archive)
    results = results_root()
    with _open_zip(archive) as zf:
        card = read_card(zf, archive)
        members = _check_members(zf, card, archive)
        target = results / card["dataset"] / card["model"]
        previous = results / card["dataset"] / card["previous_model"]["model"] if card.get("previous_model") else None
        for folder in (previous, target):
            if folder is not None:
                _check_target(folder, overwrite)
        for info in progress_bar(members, desc=f"verify {archive.name}", unit="file"):
            _read_member(zf, info, archive, card)
        created = [p for p in (target.parent, results) if not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        own, carried = _split(members, card)
        jobs = [(own, target, "")] + ([(carried, previous, f"{PREVIOUS_DIR}/")] if previous is not None else [])
        temps: list[Path] = []
        try:
            for infos, folder, prefix in jobs:
                temps.append(_new_folder(folder.parent, folder.name))
                _unpack(zf, infos, card, archive, temps[-1], prefix)
            replaced = _move_all([(tmp, folder) for tmp, (_, folder, _) in zip(temps, jobs)])
        except BaseException:
            for tmp in temps:
                shutil.rmtree(tmp, ignore_errors=True)
            for path in created:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
    return ImportResult(target, card, replaced[0], previous)
