"""Gather what the report shows about one dataset and configuration: the plan, the fingerprint, each trained arm's
folds (training curves, validation scores, transfer report, wall times) and the environment.

Only readers of existing files: summaries through ValidationSummary, scores through compare's
cross_validated_score, plans through Plans, curves from the training log that training/progress.py writes
(or the progress records of the fold's checkpoint when the log is gone).
"""
from __future__ import annotations

import math
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from xtlunet.errors import XtlunetError, noun
from xtlunet.evaluation.compare import arm_chain, cross_validated_score, finished_folds, resolve_arm
from xtlunet.evaluation.summary import ValidationSummary
from xtlunet.paths import model_folders
from xtlunet.plans import Plans
from xtlunet.utils.atomic import read_json

STAMP = r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d): "
# the line Progress.add writes (xtlunet/training/progress.py)
EPOCH_LINE = re.compile(STAMP + r"epoch (?P<epoch>\d+): train_loss (?P<train_loss>\S+)\s+val_loss (?P<val_loss>\S+)\s+"
                        r"(?P<metric_name>\S+) (?P<metric>\S+) \(ema (?P<metric_ema>\S+)\)\s+lr (?P<lr>\S+)\s+"
                        r"time (?P<epoch_time>[0-9.]+)s")
ANY_LINE = re.compile(STAMP + r"(?P<text>.*)$")
DEVICE = re.compile(r"device (?P<device>[^,]+), (?P<processes>\d+) process")
NUMBERS = ("train_loss", "val_loss", "metric", "metric_ema", "lr", "epoch_time")


@dataclass
class TrainingLog:
    """A fold's epoch records (the last of each epoch when a run was continued), device and time stamps."""

    records: list[dict[str, float]] = field(default_factory=list)
    metric_name: str = "metric"
    device: str = ""
    first: str = ""
    last: str = ""
    validation_line: str = ""

    @property
    def wall_s(self) -> float:
        """Seconds from the log's first to its last time stamp (NaN without two stamps)."""
        if not (self.first and self.last):
            return math.nan
        fmt = "%Y-%m-%d %H:%M:%S"
        return time.mktime(time.strptime(self.last, fmt)) - time.mktime(time.strptime(self.first, fmt))

    @property
    def train_s(self) -> float:
        """Sum of the logged epoch times."""
        return float(sum(r["epoch_time"] for r in self.records))


def parse_training_log(text: str) -> TrainingLog:
    """The epoch records and facts of a training_log.txt (lines of other kinds are skipped)."""
    out, epochs = TrainingLog(), {}
    for line in text.splitlines():
        stamp = ANY_LINE.match(line)
        if not stamp:
            continue
        out.first = out.first or stamp["stamp"]
        out.last = stamp["stamp"]
        m = EPOCH_LINE.match(line)
        if m:
            epochs[int(m["epoch"])] = {"epoch": float(m["epoch"]), **{k: float(m[k]) for k in NUMBERS}}
            out.metric_name = m["metric_name"]
        elif (d := DEVICE.search(stamp["text"])) is not None:
            out.device = d["device"]
        elif stamp["text"].startswith("final validation:"):
            out.validation_line = stamp["text"].split(":", 1)[1].strip()
    out.records = [epochs[k] for k in sorted(epochs)]
    return out


def fold_log(fold_dir: Path) -> TrainingLog:
    """The fold's training log, or the progress records of its last checkpoint when there is no log."""
    path = fold_dir / "training_log.txt"
    if path.is_file():
        return parse_training_log(path.read_text(errors="replace"))
    from xtlunet.training.checkpoint import latest_checkpoint, load_checkpoint

    ck = latest_checkpoint(fold_dir)
    if ck is None:
        return TrainingLog()
    records = [{k: float(r.get(k, math.nan)) for k in ("epoch", *NUMBERS)} for r in load_checkpoint(ck).get("progress", [])]
    return TrainingLog(records=records)


@dataclass
class FoldData:
    """One finished fold of an arm: its curve, validation summary and score with CI."""

    fold: int
    log: TrainingLog
    summary: ValidationSummary
    score: dict[str, Any]


@dataclass
class ArmData:
    """One arm (a model folder): name, plans, weight chain, transfer report, folds and the pooled score."""

    name: str
    folder: Path
    plans: Plans
    chain: str
    folds: list[FoldData]
    pooled: dict[str, Any]
    transfer: dict[str, Any] | None = None

    @property
    def task(self) -> str:
        """segmentation or classification."""
        return self.folds[0].summary.task

    def fold_of(self) -> dict[str, int]:
        """Case id (segmentation) or finding key (classification) → the fold that validated it."""
        out = {}
        for f in self.folds:
            for item in (f.summary.cases if f.summary.task == "segmentation" else f.summary.findings):
                out[item.case_id if f.summary.task == "segmentation" else item.key] = f.fold
        return out


def trained_arm_folders(results: Path, dataset_name: str, configuration: str) -> list[Path]:
    """Model folders of the configuration that have at least one finished fold."""
    return [f for f in model_folders(results, dataset_name, configuration, None) if finished_folds(f)]


def arm_names(folders: Sequence[Path]) -> list[str]:
    """Display names: the trainer, or TRAINER__PLANS where one trainer appears under several plans."""
    trainers = [f.name.split("__")[0] for f in folders]
    return [t if trainers.count(t) == 1 else f.name.rsplit("__", 1)[0] for t, f in zip(trainers, folders)]


def resolve_arms(results: Path, dataset_name: str, configuration: str, arms: Sequence[str] | None
                 ) -> dict[str, Path]:
    """{display name: model folder}: the given arms (TRAINER or TRAINER__PLANS), or every trained arm."""
    if arms:
        folders = [resolve_arm(results, dataset_name, configuration, a) for a in arms]
        unfinished = [f.name for f in folders if not finished_folds(f)]
        if unfinished:
            raise XtlunetError(f"{noun(len(unfinished), 'arm')} without a finished fold: {', '.join(unfinished)}", path=results / dataset_name,
                               fix="finish at least one fold (its validation/summary.json), or leave the arm out")
        return dict(zip(list(arms), folders))
    folders = trained_arm_folders(results, dataset_name, configuration)
    if not folders:
        raise XtlunetError(f"no trained arm of {configuration}: no model folder of {dataset_name} has a finished fold",
                           path=results / dataset_name,
                           fix=f"train a fold first (xtlunet train {dataset_name} {configuration} 0)")
    return dict(zip(arm_names(folders), folders))


def transfer_summary(fold_dir: Path) -> dict[str, Any] | None:
    """Mode, coverage per group, counts, seconds and chain of a fold's transfer_report.json (None without one)."""
    path = fold_dir / "transfer_report.json"
    if not path.is_file():
        return None
    from xtlunet.transfer.report import TransferReport

    report = TransferReport.from_json(read_json(path))
    return {"mode": report.mode, "source": report.source, "coverage": dict(report.coverage),
            "parameters": dict(report.parameters), "counts": report.counts(), "unused": len(report.unused),
            "seconds": report.seconds, "line": report.summary()}


def safe_score(folder: Path, folds: Sequence[int], n_boot: int, seed: int, positive_class: str | None
               ) -> dict[str, Any]:
    """cross_validated_score, or NaNs with the reason when it is undefined (e.g. a fold's findings of one class)."""
    try:
        return cross_validated_score(folder, folds, n_boot, seed, positive_class)
    except XtlunetError as err:
        summary = ValidationSummary.load(folder / f"fold_{folds[0]}" / "validation" / "summary.json")
        metric = "auc" if summary.task == "classification" else "dice"
        return {"task": summary.task, "metric": metric, "value": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "n": 0, "folds": list(folds), "note": err.what}


def collect_arm(name: str, folder: Path, n_boot: int = 2000, seed: int = 0, positive_class: str | None = None
                ) -> ArmData:
    """Everything the report shows of one arm: per finished fold and pooled over them."""
    folds = finished_folds(folder)
    data = []
    for k in folds:
        fold_dir = folder / f"fold_{k}"
        data.append(FoldData(k, fold_log(fold_dir), ValidationSummary.load(fold_dir / "validation" / "summary.json"),
                             safe_score(folder, [k], n_boot, seed, positive_class)))
    return ArmData(name=name, folder=folder, plans=Plans.load(folder / "plans.json"), chain=arm_chain(folder, folds),
                   folds=data, pooled=safe_score(folder, folds, n_boot, seed, positive_class),
                   transfer=transfer_summary(folder / f"fold_{folds[0]}"))


def environment(experiment: dict[str, Any] | None, arms: Sequence[ArmData]) -> dict[str, Any]:
    """Versions (the experiment's, and this report's), devices and wall times per stage where recorded."""
    import torch

    import xtlunet

    now = {"xtlunet": xtlunet.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform()}
    stages = []
    for arm in arms:
        for f in arm.folds:
            stages.append({"stage": f"train {arm.name} fold {f.fold}", "device": f.log.device,
                           "epochs": len(f.log.records), "train_s": f.log.train_s, "wall_s": f.log.wall_s})
        if arm.transfer:
            stages.append({"stage": f"2D→3D transfer {arm.name}", "device": "", "epochs": 0, "train_s": math.nan,
                           "wall_s": arm.transfer["seconds"]})
    recorded = (experiment or {}).get("versions")
    span = None
    if experiment and experiment.get("started") and experiment.get("finished"):
        fmt = "%Y-%m-%d %H:%M:%S"
        span = time.mktime(time.strptime(experiment["finished"], fmt)) - time.mktime(
            time.strptime(experiment["started"], fmt))
    return {"report": now, "experiment": recorded, "experiment_wall_s": span, "stages": stages,
            "devices": sorted({s["device"] for s in stages if s["device"]})}


def find_experiment(results: Path, dataset_name: str, configuration: str, plans_names: Sequence[str]
                    ) -> dict[str, Any] | None:
    """The experiment record of this configuration (experiment_CONFIG.json or experiment_PLANS_CONFIG.json)."""
    from xtlunet.experiment import load_experiment

    for stem in (configuration, *(f"{p}_{configuration}" for p in plans_names)):
        path = results / dataset_name / f"experiment_{stem}.json"
        if path.is_file():
            return load_experiment(path)
    return None
