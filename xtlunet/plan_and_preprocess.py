"""The first pipeline stage: integrity check → fingerprint → plan → preprocess."""
from __future__ import annotations

import inspect
import logging
import shutil
from pathlib import Path

from xtlunet.dataset.integrity import dataset_dimension, verify_dataset
from xtlunet.dataset.spec import DatasetSpec, find_dataset
from xtlunet.errors import XtlunetError
from xtlunet.fingerprint import Fingerprint, compute_fingerprint
from xtlunet.paths import preprocessed_root, raw_root
from xtlunet.plans import Plans
from xtlunet.preprocessing.run import preprocess_configuration
from xtlunet.registry import find_class
from xtlunet.utils.atomic import atomic_path, sweep_partial_files

log = logging.getLogger("xtlunet")


def load_spec(dataset: str | int) -> DatasetSpec:
    """The DatasetSpec of a dataset id or name under the raw root."""
    return DatasetSpec.load(find_dataset(dataset, raw_root()))


def current_fingerprint(spec: DatasetSpec, out: Path, dim: int, num_workers: int,
                        overwrite: bool, reorient: bool = False) -> tuple[Fingerprint, bool]:
    """(fingerprint, whether it is new): fingerprint.json if it is current, else computed (not yet written)."""
    path = out / "fingerprint.json"
    if path.is_file() and not overwrite:
        fp = Fingerprint.load(path)
        if fp.is_current(spec, reorient):
            return fp, False
    fp = compute_fingerprint(spec, dim, num_workers, reorient)
    for note in fp.resampled_channels:
        log.info(note)
    return fp, True


def fingerprint_dataset(spec: DatasetSpec, out: Path, dim: int, num_workers: int, overwrite: bool,
                        reorient: bool = False) -> Fingerprint:
    """Load fingerprint.json if it is current, else compute and write it."""
    fp, new = current_fingerprint(spec, out, dim, num_workers, overwrite, reorient)
    if new:
        fp.save(out / "fingerprint.json")
    return fp


def make_planner(name: str | None, spec: DatasetSpec, fp: Fingerprint, gpu_memory_gb: float,
                 pretrained: str | None, plans_name: str | None, transfer_norm: str | None = None):
    """Instantiate a planner by class name (XTLPlanner when --pretrained is given without -pl)."""
    from xtlunet.planners.default import DefaultPlanner

    name = name or ("XTLPlanner" if pretrained else "DefaultPlanner")
    cls = find_class(name, "xtlunet.planners", DefaultPlanner, "planner")
    kwargs: dict = {"gpu_memory_gb": gpu_memory_gb, "plans_name": plans_name}
    for option, value in (("pretrained", pretrained), ("transfer_norm", transfer_norm)):
        if value is None:
            continue
        if option not in inspect.signature(cls.__init__).parameters:
            raise XtlunetError(f"planner {name} does not take --{option.replace('_', '-')}",
                               fix="it applies to the XTL planner: give --pretrained (plan-and-preprocess) or "
                                   "--xtl-weights / --tl-weights (experiment)")
        kwargs[option] = value
    return cls(spec, fp, **kwargs)


def plan_and_preprocess(dataset: str | int, configurations: list[str] | None = None, planner: str | None = None,
                        pretrained: str | None = None, gpu_memory_gb: float = 8.0, verify: bool = False,
                        num_workers: int = 1, overwrite: bool = False, plans_name: str | None = None,
                        preprocess: bool = True, reorient: bool = False, transfer_norm: str | None = None) -> Plans:
    """Check, fingerprint, plan and preprocess a raw dataset (in each case's closest RAS+ frame with `reorient`;
    `transfer_norm` picks the XTL planner's normalisation of transferred encoders)."""
    spec = load_spec(dataset)
    out = preprocessed_root() / spec.name
    sweep_partial_files(out)  # temp files a killed run left (the configurations' folders are swept as they are written)
    if verify or not (out / "fingerprint.json").is_file():
        verify_dataset(spec, deep=verify, num_workers=num_workers)
    dim = dataset_dimension(spec)
    check_reorient(reorient, dim)
    fp, new_fingerprint = current_fingerprint(spec, out, dim, num_workers, overwrite, reorient)
    plans = make_planner(planner, spec, fp, gpu_memory_gb, pretrained, plans_name, transfer_norm).plan(configurations)
    plans.reorient = fp.reoriented  # the frame the fingerprint (and so the plan) was made in
    # nothing is written before the plan succeeds: a refused planner, configuration or --pretrained leaves no file
    out.mkdir(parents=True, exist_ok=True)
    if new_fingerprint:
        fp.save(out / "fingerprint.json")
    plans.save(out / f"{plans.plans_name}.json")
    shutil.copyfile(spec.json_path, out / "dataset.json")
    if spec.findings_path is not None:
        shutil.copyfile(spec.findings_path, out / spec.findings_path.name)
    copy_reference_labels(spec, out / "gt_segmentations")
    if preprocess:
        done: set[str] = set()
        for conf in plans.configurations.values():
            if conf.data_identifier in done:
                continue
            done.add(conf.data_identifier)
            counts = preprocess_configuration(spec, plans, conf, out, dim, num_workers, overwrite)
            log.info("%s: %d cases written, %d up to date", conf.name, counts["written"], counts["skipped"])
    return plans


def check_reorient(reorient: bool, dim: int) -> None:
    """Refuse --reorient for 2D datasets (RAS+ is a frame of volumes; 2D images keep their pixel axes)."""
    if reorient and dim != 3:
        raise XtlunetError(f"--reorient applies to 3D datasets, this one is {dim}D", fix="omit --reorient")


def copy_reference_labels(spec: DatasetSpec, dest: Path) -> None:
    """Copy labelsTr into the preprocessed folder (validation scores against them without the raw data)."""
    if spec.is_classification:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for case in spec.cases("Tr"):
        src = case.label_file
        target = dest / src.name
        if not target.is_file() or target.stat().st_size != src.stat().st_size or target.stat().st_mtime < src.stat().st_mtime:
            with atomic_path(target) as tmp:
                shutil.copyfile(src, tmp)


def plans_summary(plans: Plans) -> str:
    """A printable table of the planned configurations."""
    head = f"{'config':<11} {'spacing':<22} {'patch':<16} {'batch':>5} {'family':<9} {'stages':>6} {'widths':<26} {'mem GB':>7}"
    rows = [f"plans {plans.plans_name} for {plans.dataset_name} ({plans.task}, planner {plans.planner}, "
            f"{'reoriented to RAS+, ' if plans.reorient else ''}axes transposed {plans.transpose_forward})",
            head, "-" * len(head)]
    for c in plans.configurations.values():
        a = c.architecture
        widths = ",".join(map(str, a["widths"]))
        rows.append(f"{c.name:<11} {'x'.join(f'{s:.3g}' for s in c.spacing):<22} {'x'.join(map(str, c.patch_size)):<16} "
                    f"{c.batch_size:>5} {a['family']:<9} {len(a['widths']):>6} {widths[:26]:<26} {c.memory_estimate_gb:>7.3g}")
        strides = " ".join("x".join(map(str, s)) for s in a["strides"])
        kernels = " ".join("x".join(map(str, k)) for k in a["kernel_sizes"])
        rows.append(f"{'':<11} strides {strides} | kernels {kernels}")
        if c.roi_mm:
            rows.append(f"{'':<11} ROI {'x'.join(f'{v:.3g}' for v in c.roi_mm)} mm around each finding")
        if c.pretrained_constraint:
            rows.append(f"{'':<11} constrained by 2D encoder {c.pretrained_constraint['family']} "
                        f"({c.pretrained_constraint.get('source')})")
    return "\n".join(rows)
