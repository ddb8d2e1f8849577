"""`xtlunet export-model`: one trained model folder (chosen folds, one checkpoint kind) as one verified zip; a
cascade stage's zip also carries the lowres model its prediction runs first (every finished fold, under
previous_stage/)."""
from __future__ import annotations

import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.model_archive.card import (CARD_MD, CARD_NAME, CHECKPOINT_KINDS, FOLD_EXTRAS, MODEL_EXTRAS,
                                        PREVIOUS_DIR, REQUIRED, build_card, checkpoint_member, fold_entry, model_entry,
                                        render_markdown)
from xtlunet.model_archive.members import copy_hashed
from xtlunet.utils.atomic import atomic_path, json_ready, read_json
from xtlunet.utils.console import progress_bar

log = logging.getLogger("xtlunet")


@dataclass
class ExportResult:
    """The archive written and its card."""

    path: Path
    card: dict[str, Any]
    folder: Path
    previous: Path | None = None   # the lowres model folder carried with a cascade stage


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output path that is a folder, or an existing file without --overwrite."""
    if out.is_dir():
        raise XtlunetError("-o is a folder, not a zip file path", path=out, fix="give a file path, e.g. -o model.zip")
    if out.exists() and not overwrite:
        raise XtlunetError("the output file exists", path=out, fix="choose another -o, or add --overwrite to "
                                                                     "replace it")


def _model_folder(dataset: str, configuration: str, trainer: str, plans_name: str | None) -> Path:
    """The trained model folder in $XTLUNET_results, with its plans.json and dataset.json."""
    from xtlunet.dataset.spec import find_dataset
    from xtlunet.inference.models import check_model_files, resolve_model_folder
    from xtlunet.paths import results_root

    results = results_root()
    folder = resolve_model_folder(results, find_dataset(dataset, results).name, configuration, trainer, plans_name)
    check_model_files(folder)
    return folder


def _fold_checkpoints(folder: Path, folds: Sequence[str] | None, checkpoint: str) -> dict[str, Path]:
    """fold → checkpoint file of the chosen folds (default: every finished fold); a missing one is refused."""
    from xtlunet.inference.models import available_folds, checkpoint_paths

    chosen = [str(f) for f in folds] if folds else available_folds(folder, checkpoint)
    if not chosen:
        raise XtlunetError(f"no fold of {folder.name} has checkpoint_{checkpoint}.pth", path=folder,
                           fix="train at least one fold to the end, or choose the checkpoint with --checkpoint")
    return checkpoint_paths(folder, chosen, checkpoint)


def _fold_entries(folder: Path, paths: dict[str, Path], identity: str) -> dict[str, dict[str, Any]]:
    """fold → card entry, each checkpoint checked against the folder's plans (identity) and trainer."""
    from xtlunet.training.checkpoint import check_checkpoint, load_checkpoint

    trainer = folder.name.split("__")[0]
    entries = {}
    for fold, path in paths.items():
        ck = load_checkpoint(path)
        check_checkpoint(ck, trainer, identity, path)
        report_path = path.parent / "transfer_report.json"
        entries[fold] = fold_entry(ck, read_json(report_path) if report_path.is_file() else None)
    return entries


def _cv(folder: Path) -> dict[str, Any] | None:
    """The model folder's cv_summary.json, if any."""
    return read_json(folder / "cv_summary.json") if (folder / "cv_summary.json").is_file() else None


def _previous_model(folder: Path, conf: Any, checkpoint: str) -> tuple[Path, dict[str, Path]] | None:
    """A cascade stage's lowres model folder (the one predict follows) and the checkpoints predict loads from it,
    every finished fold; None for other configurations. A lowres model without one is refused."""
    if not conf.previous_stage:
        return None
    from xtlunet.cascade.chain import previous_folder
    from xtlunet.inference.models import available_folds, check_model_files

    prev = previous_folder(folder, conf)
    if not (prev.is_dir() and available_folds(prev, checkpoint)):
        trainer, plans_name = prev.name.split("__")[:2]
        raise XtlunetError(f"{conf.name} predicts after its {conf.previous_stage} model {prev.name}, which has no "
                           f"fold with checkpoint_{checkpoint}.pth to carry in the archive", path=prev,
                           fix=f"train it first: xtlunet train {folder.parent.name} {conf.previous_stage} FOLD -tr "
                               f"{trainer} -p {plans_name}")
    check_model_files(prev)
    return prev, _fold_checkpoints(prev, None, checkpoint)


def archive_members(folder: Path, folds: Sequence[str], checkpoint: str) -> list[str]:
    """The model-folder files an archive carries: plans, dataset, model extras, then per fold its checkpoint and
    the extras present."""
    members = [*REQUIRED, *(name for name in MODEL_EXTRAS if (folder / name).is_file())]
    for fold in folds:
        members.append(checkpoint_member(fold, checkpoint))
        members += [f"fold_{fold}/{name}" for name in FOLD_EXTRAS if (folder / f"fold_{fold}" / name).is_file()]
    return members


def _write_file(zf: zipfile.ZipFile, src: Path, member: str) -> dict[str, Any]:
    """Add one file (checkpoints stored, text deflated) and return its sha256 and size as written."""
    info = zipfile.ZipInfo.from_file(src, member, strict_timestamps=False)
    info.compress_type = zipfile.ZIP_STORED if member.endswith(".pth") else zipfile.ZIP_DEFLATED
    with open(src, "rb") as fh, zf.open(info, "w") as dst:
        sha, size = copy_hashed(fh, dst)
    return {"sha256": sha, "size": size}


def _write_bytes(zf: zipfile.ZipFile, member: str, data: bytes) -> dict[str, Any]:
    """Add generated bytes (card, card text) and return their sha256 and size."""
    import hashlib

    info = zipfile.ZipInfo(member, date_time=time.localtime()[:6])
    info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
    zf.writestr(info, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def export_model(dataset: str, configuration: str, trainer: str = "ScratchTrainer", plans_name: str | None = None,
                 folds: Sequence[str | int] | None = None, checkpoint: str = "final", out: str | Path = "model.zip",
                 overwrite: bool = False) -> ExportResult:
    """Write the model's chosen folds, their records and a model card (every file's sha256) into one zip,
    atomically; every check runs before the zip is started."""
    look_up_option(checkpoint, CHECKPOINT_KINDS, "checkpoint")
    out = Path(out)
    _check_output(out, overwrite)
    folder = _model_folder(dataset, configuration, trainer, plans_name)
    paths = _fold_checkpoints(folder, [str(f) for f in folds] if folds else None, checkpoint)
    from xtlunet.plans import Plans

    plans = Plans.load(folder / "plans.json")
    conf = plans.configuration(configuration)
    members = [(folder / m, m) for m in archive_members(folder, list(paths), checkpoint)]
    bundle, previous = _previous_model(folder, conf, checkpoint), None
    if bundle is not None:
        prev, prev_paths = bundle
        previous = model_entry(prev, list(prev_paths), _fold_entries(prev, prev_paths, Plans.load(
            prev / "plans.json").identity()), _cv(prev))
        members += [(prev / m, f"{PREVIOUS_DIR}/{m}") for m in archive_members(prev, list(prev_paths), checkpoint)]
        log.info("%s predicts after %s: carrying its folds %s", folder.name, prev.name, ", ".join(prev_paths))
    card = build_card(folder, list(paths), checkpoint, conf.task, read_json(folder / "dataset.json"),
                      _fold_entries(folder, paths, plans.identity()), _cv(folder), conf.previous_stage, previous)
    files: dict[str, dict[str, Any]] = {}
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        for src, member in progress_bar(members, desc=f"export {folder.name}", unit="file"):
            files[member] = _write_file(zf, src, member)
        files[CARD_MD] = _write_bytes(zf, CARD_MD, render_markdown(card).encode())
        card["files"] = files
        _write_bytes(zf, CARD_NAME, (json.dumps(json_ready(card), indent=2, allow_nan=False) + "\n").encode())
    return ExportResult(out, card, folder, bundle[0] if bundle else None)
