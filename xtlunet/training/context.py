"""Everything a training run reads before it starts: plans, configuration, folders, the fold's cases."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xtlunet.dataset.spec import DatasetSpec, find_dataset
from xtlunet.errors import XtlunetError
from xtlunet.paths import model_folder, preprocessed_root
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.training.data import CaseArrays, load_case_arrays
from xtlunet.training.run_spec import RunSpec
from xtlunet.training.splits import fold_split
from xtlunet.utils.atomic import read_json


@dataclass
class TrainingContext:
    """Resolved inputs and outputs of one fold."""

    spec: DatasetSpec
    plans: Plans
    conf: ConfigurationPlan
    pre_dir: Path
    data_dir: Path
    model_dir: Path
    out_dir: Path
    train_ids: list[str]
    val_ids: list[str]

    def load(self, ids: list[str]) -> list[CaseArrays]:
        """Memory-map the preprocessed arrays of these cases."""
        return [load_case_arrays(self.data_dir, c) for c in ids]


def load_context(run: RunSpec, trainer_name: str) -> TrainingContext:
    """Resolve the run's dataset, plans, configuration, preprocessed arrays and fold."""
    pre_dir = find_dataset(run.dataset, preprocessed_root())
    spec = DatasetSpec.load(pre_dir)
    plans = Plans.load(pre_dir / f"{run.plans_name}.json")
    conf = plans.configuration(run.configuration)
    data_dir = pre_dir / conf.data_identifier
    manifest = data_dir / "configuration.json"
    if not manifest.is_file():
        raise XtlunetError(f"configuration {conf.name} has not been preprocessed", path=data_dir,
                           fix=f"run xtlunet plan-and-preprocess -d {run.dataset} -c {conf.name}")
    ids = read_json(manifest)["cases"]
    findings = pre_dir / spec.findings_file if spec.findings_file else None
    train_ids, val_ids = fold_split(pre_dir, ids, findings, spec.classes, run.fold)
    if conf.task == "segmentation" and not spec.is_classification:
        check_foreground(spec, data_dir, run.fold, train_ids, val_ids)
    model_dir = model_folder(spec.name, trainer_name, plans.plans_name, conf.name)
    return TrainingContext(spec, plans, conf, pre_dir, data_dir, model_dir, model_dir / run.fold_name,
                           train_ids, val_ids)


def check_foreground(spec: DatasetSpec, data_dir: Path, fold: int | str, train_ids: list[str],
                     val_ids: list[str]) -> None:
    """Refuse a segmentation fold whose training cases hold no foreground voxel: it would only learn background
    (Dice 0). Reads the cases' class_locations, stopping at the first case with foreground."""
    if any(has_foreground(data_dir, c) for c in train_ids):
        return
    held_out = [c for c in val_ids if has_foreground(data_dir, c)]
    if held_out:
        raise XtlunetError(f"no training case of fold {fold} of {spec.name} has a foreground voxel (only its "
                           f"validation cases do: {', '.join(held_out[:3])}): the network would learn background only",
                           path=data_dir.parent / "splits_final.json",
                           fix="put labelled cases into the fold's \"train\" list of splits_final.json, or delete the "
                               "file for the default split")
    labels = ", ".join(f"{k}={v}" for k, v in spec.labels.items() if v != 0)
    n = len(train_ids) + len(val_ids)
    raise XtlunetError(f"every label map of {spec.name} is background only (none of the {n} "
                       f"cases of fold {fold} has a foreground voxel after preprocessing): the network would learn to "
                       "predict background everywhere (Dice 0)",
                       path=data_dir,
                       fix=f"annotate the structures in labelsTr with the values of dataset.json's labels ({labels}), "
                           f"then re-run xtlunet plan-and-preprocess -d {spec.name}")


def has_foreground(data_dir: Path, case_id: str) -> bool:
    """Whether a preprocessed case has a foreground voxel (its class_locations are not all empty); a case whose
    properties are missing or hold no class_locations counts as labelled (loading it reports a damaged case)."""
    path = data_dir / f"{case_id}.json"
    locations = read_json(path).get("class_locations") if path.is_file() else None
    return locations is None or any(len(v) for v in locations.values())
