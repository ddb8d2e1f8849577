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
from xtlunet.training.splits import fold_cases, load_or_create_splits
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
    splits = load_or_create_splits(pre_dir, ids, findings, spec.classes)
    train_ids, val_ids = fold_cases(splits, run.fold, ids)
    model_dir = model_folder(spec.name, trainer_name, plans.plans_name, conf.name)
    return TrainingContext(spec, plans, conf, pre_dir, data_dir, model_dir, model_dir / run.fold_name,
                           train_ids, val_ids)
