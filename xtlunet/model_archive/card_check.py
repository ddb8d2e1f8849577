"""Read and check the model card of an archive before anything is unpacked: format, names, listed files."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

from xtlunet.errors import XtlunetError
from xtlunet.model_archive.card import (CARD_NAME, CHECKPOINT_KINDS, FORMAT, KNOWN_VERSIONS, PREVIOUS_DIR,
                                        REQUIRED, checkpoint_member)
from xtlunet.model_archive.members import READ_ERRORS, parent_folders, unsafe_reason

MAX_CARD_BYTES = 16 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DATASET = re.compile(r"^Dataset\d{3}_[^/\\\x00]+$")
_PART = re.compile(r"^[^/\\\x00.][^/\\\x00]*$")
REEXPORT = "export the model again with 'xtlunet export-model', or copy the archive again"


def refuse(archive: Path, what: str, fix: str = REEXPORT) -> XtlunetError:
    """The one-line error of a refused archive (it names the zip; `what` names the member)."""
    return XtlunetError(what, path=archive, fix=fix)


def read_card(zf: zipfile.ZipFile, archive: Path) -> dict[str, Any]:
    """The archive's model_card.json, checked: known format version, safe names, a files table that lists what
    predict needs."""
    try:
        info = zf.getinfo(CARD_NAME)
    except KeyError:
        raise refuse(archive, f"not an xtlunet model archive: no {CARD_NAME}",
                     "give a zip written by 'xtlunet export-model'") from None
    if info.file_size > MAX_CARD_BYTES:
        raise refuse(archive, f"member '{CARD_NAME}' is {info.file_size} bytes, too large for a model card")
    try:
        card = json.loads(zf.read(info))
    except (ValueError, *READ_ERRORS) as exc:
        raise refuse(archive, f"member '{CARD_NAME}' is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise refuse(archive, f"member '{CARD_NAME}' is not an xtlunet model card (format "
                     f"{card.get('format') if isinstance(card, dict) else None!r})",
                     "give a zip written by 'xtlunet export-model'")
    version = card.get("format_version")
    if version not in KNOWN_VERSIONS or isinstance(version, bool):
        raise refuse(archive, f"model archive format version {version!r} is not known to this xtlunet (it reads "
                     f"{', '.join(map(str, KNOWN_VERSIONS))})", "update xtlunet, or export the model with this "
                     "version")
    _check_names(card, archive)
    _check_files(card, archive)
    return card


def _check_model(entry: dict[str, Any], archive: Path, what: str = "model") -> None:
    """A model entry whose folder name stays one folder under the dataset folder, with a list of valid folds."""
    model = entry.get("model")
    parts = [entry.get("trainer"), entry.get("plans_name"), entry.get("configuration")]
    if not all(isinstance(p, str) and _PART.match(p) and "__" not in p for p in parts) or model != "__".join(parts):
        raise refuse(archive, f"member '{CARD_NAME}' names no valid {what} folder ({model!r}; expected "
                     "TRAINER__PLANS__CONFIG from its trainer, plans_name and configuration)")
    folds = entry.get("folds")
    if not isinstance(folds, list) or not folds or not all(isinstance(f, str) and _PART.match(f) for f in folds):
        raise refuse(archive, f"member '{CARD_NAME}' lists no valid folds of the {what}")


def _check_names(card: dict[str, Any], archive: Path) -> None:
    """Dataset and model folder names that stay one folder each under the results root (a carried lowres model's
    too: the configuration the cascade names, another folder than the cascade's)."""
    dataset = card.get("dataset")
    if not (isinstance(dataset, str) and _DATASET.match(dataset)):
        raise refuse(archive, f"member '{CARD_NAME}' names no valid dataset folder ({dataset!r}; expected "
                     "DatasetNNN_Name)")
    if card.get("checkpoint") not in CHECKPOINT_KINDS:
        raise refuse(archive, f"member '{CARD_NAME}' lists no valid folds and checkpoint kind")
    _check_model(card, archive)
    previous = card.get("previous_model")
    if previous is None:
        return
    if not isinstance(previous, dict):
        raise refuse(archive, f"member '{CARD_NAME}' has a previous_model that is not an object")
    _check_model(previous, archive, "previous-stage model")
    if previous["configuration"] != card.get("previous_stage") or previous["model"] == card["model"]:
        raise refuse(archive, f"member '{CARD_NAME}' names previous-stage model {previous['model']!r}, not a "
                     f"{card.get('previous_stage')} model beside {card['model']}")


def needed_files(card: dict[str, Any]) -> list[str]:
    """The members predict needs: plans, dataset description and each fold's checkpoint, of the model and of a
    carried lowres model (under PREVIOUS_DIR/)."""
    needed = [*REQUIRED, *(checkpoint_member(f, card["checkpoint"]) for f in card["folds"])]
    previous = card.get("previous_model")
    if previous:
        needed += [f"{PREVIOUS_DIR}/{name}" for name in
                   (*REQUIRED, *(checkpoint_member(f, card["checkpoint"]) for f in previous["folds"]))]
    return needed


def _check_files(card: dict[str, Any], archive: Path) -> None:
    """The files table: safe relative paths with a sha256 and a size, no path both a file and a folder, and
    the plans, dataset description and each fold's checkpoint present."""
    files = card.get("files")
    if not isinstance(files, dict):
        raise refuse(archive, f"member '{CARD_NAME}' has no files table")
    for name, entry in files.items():
        reason = unsafe_reason(name) or ("is the card itself" if name == CARD_NAME else None)
        if reason or name.endswith("/"):
            raise refuse(archive, f"member '{name}' listed in the model card {reason or 'is a folder'}")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.match(entry["sha256"])
                and isinstance(entry.get("size"), int) and entry["size"] >= 0):
            raise refuse(archive, f"member '{name}' has no valid sha256 and size in the model card")
    folders = {p for name in files for p in parent_folders(name)}
    clash = next((name for name in files if name + "/" in folders), None)
    if clash is not None:
        raise refuse(archive, f"member '{clash}' is listed both as a file and as a folder")
    missing = next((name for name in needed_files(card) if name not in files), None)
    if missing is not None:
        raise refuse(archive, f"member '{missing}' is not listed in the model card, and predict needs it")
