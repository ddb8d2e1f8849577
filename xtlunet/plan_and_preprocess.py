"""The first pipeline stage: integrity check → fingerprint → plan → preprocess."""
from __future__ import annotations

import inspect
import logging
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from xtlunet.dataset.integrity import dataset_dimension, verify_dataset
from xtlunet.dataset.spec import DatasetSpec, find_dataset
from xtlunet.errors import XtlunetError
from xtlunet.fingerprint import Fingerprint, compute_fingerprint
from xtlunet.paths import preprocessed_root, raw_root
from xtlunet.plans import Plans
from xtlunet.preprocessing.run import preprocess_configuration
from xtlunet.registry import find_class
from xtlunet.utils.atomic import atomic_path, json_ready, read_json, sweep_partial_files
from xtlunet.utils.sharding import WHOLE, Part, waiting_lock

log = logging.getLogger("xtlunet")


def load_spec(dataset: str | int) -> DatasetSpec:
    """The DatasetSpec of a dataset id or name under the raw root."""
    return DatasetSpec.load(find_dataset(dataset, raw_root()))


def current_fingerprint(spec: DatasetSpec, out: Path, dim: int, num_workers: int,
                        overwrite: bool, reorient: bool = False, part: Part = WHOLE) -> tuple[Fingerprint, bool]:
    """(fingerprint, whether it is new): fingerprint.json if it is current, else computed (not yet written); a part
    of a job array refuses one that is not current (the other parts may be using it)."""
    path = out / "fingerprint.json"
    if path.is_file() and not overwrite:
        fp = Fingerprint.load(path)
        if fp.is_current(spec, reorient):
            return fp, False
        if not part.is_whole:
            raise settings_differ(path, "describes other training cases or other settings (e.g. --reorient)", spec)
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
                        preprocess: bool = True, reorient: bool = False, transfer_norm: str | None = None,
                        part: Part = WHOLE) -> Plans:
    """Check, fingerprint, plan and preprocess a raw dataset (in each case's closest RAS+ frame with `reorient`;
    `transfer_norm` picks the XTL planner's normalisation of transferred encoders). A `part` of a job array
    shares the fingerprint and plan with the other parts (made once, under the dataset folder's lock) and
    preprocesses its own cases only."""
    spec = load_spec(dataset)
    out = preprocessed_root() / spec.name
    if overwrite and not part.is_whole:
        raise XtlunetError("--overwrite cannot be combined with --num-parts: each part would redo the fingerprint "
                           "and plan the other parts use", path=out,
                           fix="to redo everything, delete fingerprint.json and the configuration folders there, "
                               "then run the parts without --overwrite")
    sweep_partial_files(out)  # temp files a killed run left (the configurations' folders are swept as they are written)
    if verify or not (out / "fingerprint.json").is_file():
        verify_dataset(spec, deep=verify, num_workers=num_workers)
    dim = dataset_dimension(spec)
    check_reorient(reorient, dim)

    def plan(fp: Fingerprint) -> Plans:
        """The plan of this run's settings for a fingerprint."""
        instance = make_planner(planner, spec, fp, gpu_memory_gb, pretrained, plans_name, transfer_norm)
        plans = instance.plan(configurations)
        plans.reorient = fp.reoriented  # the frame the fingerprint (and so the plan) was made in
        return plans

    # parts take turns: the first makes the fingerprint and plan, the others reuse them
    with nullcontext() if part.is_whole else waiting_lock(out, "preprocessed dataset folder"):
        plans = settle_plans(spec, out, dim, num_workers, overwrite, reorient, plan, part)
    if preprocess:
        done: set[str] = set()
        for conf in plans.configurations.values():
            if conf.data_identifier in done:
                continue
            done.add(conf.data_identifier)
            counts = preprocess_configuration(spec, plans, conf, out, dim, num_workers, overwrite, part)
            log.info("%s%s: %d cases written, %d up to date", conf.name, "" if part.is_whole else f" ({part.label})",
                     counts["written"], counts["skipped"])
    return plans


def settle_plans(spec: DatasetSpec, out: Path, dim: int, num_workers: int, overwrite: bool, reorient: bool,
                 plan: Callable[[Fingerprint], Plans], part: Part) -> Plans:
    """Fingerprint and plan the dataset and write the dataset-level files (only those that changed); a part of a
    job array reuses the fingerprint and plan another part made, and refuses ones made with other settings."""
    fp, new_fingerprint = current_fingerprint(spec, out, dim, num_workers, overwrite, reorient, part)
    plans = plan(fp)
    plans_path = out / f"{plans.plans_name}.json"
    if not part.is_whole and plans_path.is_file():
        check_same_plans(plans, plans_path, spec)
    # nothing is written before the plan succeeds: a refused planner, configuration or --pretrained leaves no file
    out.mkdir(parents=True, exist_ok=True)
    if new_fingerprint:
        fp.save(out / "fingerprint.json")
    if part.is_whole or not plans_path.is_file():
        plans.save(plans_path)
    copy_if_changed(spec.json_path, out / "dataset.json")
    if spec.findings_path is not None:
        copy_if_changed(spec.findings_path, out / spec.findings_path.name)
    copy_reference_labels(spec, out / "gt_segmentations")
    return plans


def check_same_plans(plans: Plans, path: Path, spec: DatasetSpec) -> None:
    """Refuse a part whose plan differs from the one another part (or an earlier run) wrote."""
    differ = differences(read_json(path), json_ready(plans.to_json()))
    if differ:
        raise settings_differ(path, f"was made with other settings than this part's (differs in "
                                    f"{', '.join(differ[:3])}{', …' if len(differ) > 3 else ''})", spec)


def settings_differ(path: Path, what: str, spec: DatasetSpec) -> XtlunetError:
    """The error of a part that finds a shared file (fingerprint, plans) it cannot reuse."""
    return XtlunetError(f"{path.name} {what}; the parts of a job array share it", path=path,
                        fix="run every part with the same options; to re-plan, run once without --num-parts "
                            f"(xtlunet plan-and-preprocess -d {spec.name} --no-pp and this part's other options), "
                            "then the parts")


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """The key paths (e.g. configurations.3d_fullres.patch_size) at which two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in dict.fromkeys([*old, *new])
                for d in differences(old.get(k), new.get(k), f"{where}.{k}" if where else str(k))]
    return [] if old == new else [where or "the whole file"]


def copy_if_changed(src: Path, dest: Path) -> None:
    """Copy a file atomically unless dest already holds the same bytes (parts of a job array write it once)."""
    if dest.is_file() and dest.read_bytes() == src.read_bytes():
        return
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


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
    """A printable table of the planned configurations (the first column as wide as the longest name)."""
    w = max([len("config"), *(len(name) for name in plans.configurations)])
    head = (f"{'config':<{w}} {'spacing':<22} {'patch':<16} {'batch':>5} {'family':<9} {'stages':>6} {'widths':<26} "
            f"{'mem GB':>7}")
    rows = [f"plans {plans.plans_name} for {plans.dataset_name} ({plans.task}, planner {plans.planner}, "
            f"{'reoriented to RAS+, ' if plans.reorient else ''}axes transposed {plans.transpose_forward})",
            head, "-" * len(head)]
    for c in plans.configurations.values():
        a = c.architecture
        widths = ",".join(map(str, a["widths"]))
        rows.append(f"{c.name:<{w}} {'x'.join(f'{s:.3g}' for s in c.spacing):<22} "
                    f"{'x'.join(map(str, c.patch_size)):<16} {c.batch_size:>5} {a['family']:<9} {len(a['widths']):>6} "
                    f"{widths[:26]:<26} {c.memory_estimate_gb:>7.3g}")
        strides = " ".join("x".join(map(str, s)) for s in a["strides"])
        kernels = " ".join("x".join(map(str, k)) for k in a["kernel_sizes"])
        rows.append(f"{'':<{w}} strides {strides} | kernels {kernels}")
        if c.roi_mm:
            rows.append(f"{'':<{w}} ROI {'x'.join(f'{v:.3g}' for v in c.roi_mm)} mm around each finding")
        if c.pretrained_constraint:
            rows.append(f"{'':<{w}} constrained by 2D encoder {c.pretrained_constraint['family']} "
                        f"({c.pretrained_constraint.get('source')})")
    return "\n".join(rows)
