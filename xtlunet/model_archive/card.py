"""The model card: what a model archive holds (model, folds, init chain, CV metrics, versions, file hashes).

`model_card.json` sits at the root of the zip; `files` maps every other member (a path relative to the model
folder, '/'-separated) to its sha256 and size. `MODEL_CARD.md` is rendered from the same card (without `files`) and
is itself listed in `files`. A cascade stage's archive (format version 2) also carries the lowres model it predicts
after: its files lie under `previous_stage/` (listed in `files` with that prefix) and `previous_model` names it.
"""
from __future__ import annotations

import datetime
import math
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

from xtlunet.errors import plural
from xtlunet.transfer.checkpoint import NO_INIT

FORMAT = "xtlunet.model_archive"
FORMAT_VERSION = 1          # an archive of one model folder
BUNDLE_VERSION = 2          # a cascade stage with its lowres model under PREVIOUS_DIR/
KNOWN_VERSIONS = (FORMAT_VERSION, BUNDLE_VERSION)
PREVIOUS_DIR = "previous_stage"
CARD_NAME = "model_card.json"
CARD_MD = "MODEL_CARD.md"
CHECKPOINT_KINDS = ("final", "best")
FOLD_EXTRAS = ("transfer_report.json", "validation/summary.json", "training_log.txt")   # carried when present
MODEL_EXTRAS = ("cv_summary.json", "postprocessing.json", "previous_stage.json")       # carried when present
REQUIRED = ("plans.json", "dataset.json")


def checkpoint_member(fold: str, checkpoint: str) -> str:
    """The zip member (and model-folder path) of a fold's checkpoint."""
    return f"fold_{fold}/checkpoint_{checkpoint}.pth"


def fold_entry(ck: Mapping[str, Any], report: Mapping[str, Any] | None) -> dict[str, Any]:
    """A fold's part of the card: epoch reached, the recipe it was trained with, and its weight transfer."""
    recipe = dict(ck.get("recipe") or {})
    entry: dict[str, Any] = {"epoch": ck.get("epoch"), "recipe": recipe}
    if report is None:
        entry["init"] = "random" if not recipe.get("pretrained_sha256") else "pretrained (no transfer_report.json)"
        return entry
    chain = [str(step) for step in report.get("chain") or []]
    entry["init"] = " → ".join(chain) if chain else NO_INIT
    entry["transfer"] = {"mode": report.get("mode"), "source_format": report.get("source_format"), "chain": chain,
                         "coverage": dict(report.get("coverage") or {})}
    return entry


def cv_metrics(cv: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The cross-validation numbers of cv_summary.json: per-fold mean Dice (or AUC) and the pooled value."""
    if not cv:
        return None
    if cv.get("task") == "classification":
        return {"metric": "auc", "folds": list(cv.get("folds", [])), "per_fold": list(cv.get("fold_auc", [])),
                "pooled": cv.get("auc"), "n": cv.get("n_findings")}
    return {"metric": "mean_dice", "folds": list(cv.get("folds", [])), "per_fold": list(cv.get("fold_mean_dice", [])),
            "pooled": (cv.get("foreground_mean") or {}).get("dice"), "n": cv.get("n_cases")}


def versions() -> dict[str, str]:
    """The versions a model was exported with."""
    import torch

    import xtlunet

    return {"xtlunet": xtlunet.__version__, "torch": torch.__version__, "python": platform.python_version()}


def model_entry(folder: Path, folds: Sequence[str], fold_entries: Mapping[str, dict[str, Any]],
                cv: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a card says of one model folder: its name and parts, folds, fold details and CV metrics."""
    trainer, plans_name, configuration = folder.name.split("__")
    return {"model": folder.name, "trainer": trainer, "plans_name": plans_name, "configuration": configuration,
            "folds": list(folds), "fold_details": {str(k): v for k, v in fold_entries.items()}, "cv": cv_metrics(cv)}


def build_card(folder: Path, folds: Sequence[str], checkpoint: str, task: str, dataset: Mapping[str, Any],
               fold_entries: Mapping[str, dict[str, Any]], cv: Mapping[str, Any] | None,
               previous_stage: str | None = None, previous_model: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of an archive of `folder` (without `files`, which the writer adds as it hashes); `previous_model`
    is the model_entry of a cascade's lowres model carried under PREVIOUS_DIR/."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION if previous_model is None else BUNDLE_VERSION,
            "dataset": folder.parent.name, **model_entry(folder, folds, fold_entries, cv), "task": task,
            "checkpoint": checkpoint, "previous_stage": previous_stage, "previous_model": previous_model,
            "inputs": {"channel_names": dict(dataset.get("channel_names") or dataset.get("modality") or {}),
                       "file_ending": dataset.get("file_ending")},
            "labels": dict(dataset.get("labels") or {}), "classes": dict(dataset.get("classes") or {}),
            "versions": versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _number(value: object) -> str:
    """A metric for the card's text: four decimals, or 'n/a'."""
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def predict_command(card: Mapping[str, Any]) -> str:
    """The `xtlunet predict` line for the archived model."""
    extra = " --checkpoint best" if card["checkpoint"] == "best" else ""
    return (f"xtlunet predict -i IN -o OUT -d {card['dataset']} -c {card['configuration']} -tr {card['trainer']} "
            f"-p {card['plans_name']} -f {' '.join(card['folds'])}{extra}")


def render_markdown(card: Mapping[str, Any]) -> str:
    """MODEL_CARD.md: the card in a few human-readable lines."""
    inputs = card["inputs"]
    channels = ", ".join(f"`CASE_{int(k):04d}{inputs['file_ending']}` {v}" for k, v in inputs["channel_names"].items())
    outputs = card["classes"] if card["task"] == "classification" else card["labels"]
    lines = [f"# {card['dataset']} — {card['model']}", "",
             f"- task: {card['task']}; configuration `{card['configuration']}`, plans `{card['plans_name']}`, "
             f"trainer `{card['trainer']}`",
             f"- folds: {', '.join(card['folds'])} (checkpoint_{card['checkpoint']}.pth)",
             f"- inputs: {channels}",
             f"- outputs: {', '.join(f'{v} {k}' for k, v in outputs.items())}"]
    for fold, entry in card["fold_details"].items():
        recipe = entry.get("recipe") or {}
        coverage = (entry.get("transfer") or {}).get("coverage") or {}
        cover = f"; encoder coverage {100 * coverage['encoder']:.1f}%" if "encoder" in coverage else ""
        mode = f", {recipe['transfer_mode']}" if recipe.get("transfer_mode") else ""
        lines.append(f"- fold {fold}: init {entry['init']}{mode}{cover}; {plural(entry.get('epoch') or 0, 'epoch')}, "
                     f"seed {recipe.get('seed')}")
    cv = card.get("cv")
    if cv:
        per_fold = ", ".join(f"{f} {_number(v)}" for f, v in zip(cv["folds"], cv["per_fold"]))
        lines.append(f"- cross-validation {cv['metric']}: pooled {_number(cv['pooled'])}; per fold {per_fold}")
    previous = card.get("previous_model")
    if previous:
        lines.append(f"- a cascade stage: predicts after the {card['previous_stage']} model {previous['model']} "
                     f"(folds {', '.join(previous['folds'])}), carried in {PREVIOUS_DIR}/ and imported beside it")
    elif card.get("previous_stage"):
        lines.append(f"- a cascade stage: predicts after the {card['previous_stage']} model of the same trainer and "
                     "plans, which is not in this archive (export and import it too)")
    versions_text = ", ".join(f"{k} {v}" for k, v in card["versions"].items())
    lines += [f"- exported {card['created']} with {versions_text}", "", "Predict with:", "",
              f"    {predict_command(card)}", ""]
    return "\n".join(lines)
