"""Preprocess all cases of a dataset for one configuration (parallel, skip up-to-date, atomic writes), or the
cases of one part of a job array."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from xtlunet.dataset.findings import Finding, read_findings
from xtlunet.dataset.loading import load_case
from xtlunet.dataset.spec import Case, DatasetSpec
from xtlunet.plans import ConfigurationPlan, Plans
from xtlunet.preprocessing.case import preprocess_loaded
from xtlunet.utils.atomic import STALE_AFTER_S, read_json, save_npy, sweep_partial_files, write_json
from xtlunet.utils.parallel import map_cases
from xtlunet.utils.sharding import WHOLE, Part

log = logging.getLogger("xtlunet")


def source_stamp(case: Case) -> list[list[Any]]:
    """(file, size, mtime) of a case's source files, to tell whether its arrays are up to date."""
    files = [*case.image_files, *([case.label_file] if case.label_file else [])]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]


def is_up_to_date(out_dir: Path, case: Case, key: str) -> bool:
    """Whether a case's arrays exist, are complete (damaged ones are redone) and came from the same sources and plan."""
    meta = out_dir / f"{case.case_id}.json"
    if not (meta.is_file() and (out_dir / f"{case.case_id}.npy").is_file()):
        return False
    try:
        props = read_json(meta)
    except Exception:
        return False
    if props.get("preprocessing_key") != key or props.get("source_stamp") != source_stamp(case):
        return False
    arrays = [out_dir / f"{case.case_id}.npy", *([out_dir / f"{case.case_id}_seg.npy"] if case.label_file else [])]
    return all(_readable_array(f) for f in arrays)


def _readable_array(path: Path) -> bool:
    """Whether a .npy file has a sound header and all its data (the memory map checks the size)."""
    try:
        np.load(path, mmap_mode="r")
        return True
    except (OSError, ValueError, EOFError):
        return False


def _preprocess_job(args: tuple[Case, DatasetSpec, Plans, ConfigurationPlan, list[Finding], int, Path, str]) -> str:
    """Preprocess and write one case (runs in a worker). Arrays first, the .json last as the commit mark."""
    case, spec, plans, conf, findings, dim, out_dir, key = args
    lc = load_case(case, spec, dim)
    fg = [v for v in spec.label_values() if v != 0]
    data, seg, props = preprocess_loaded(lc, plans, conf, findings, fg)
    save_npy(out_dir / f"{case.case_id}.npy", data.astype(np.float32))
    if seg is not None:
        save_npy(out_dir / f"{case.case_id}_seg.npy", seg)
    props.update(preprocessing_key=key, source_stamp=source_stamp(case), configuration=conf.name)
    write_json(out_dir / f"{case.case_id}.json", props)
    return case.case_id


def preprocess_configuration(spec: DatasetSpec, plans: Plans, conf: ConfigurationPlan, out_root: Path,
                             dim: int, num_workers: int = 1, overwrite: bool = False,
                             part: Part = WHOLE) -> dict[str, int]:
    """Preprocess every training case for `conf` (only the part's cases for a `part` of a job array); returns
    counts of written and skipped cases. configuration.json, the mark that every case is ready, is written once
    they all are: by a whole run, or by the part that finishes last."""
    out_dir = out_root / conf.data_identifier
    key = conf.preprocessing_key(plans.reorient)
    cases = spec.cases("Tr")
    findings = read_findings(spec.findings_path, spec.classes, cases=cases) if spec.is_classification else []
    out_dir.mkdir(parents=True, exist_ok=True)   # after the findings check: a refused run leaves no folder
    by_case: dict[str, list[Finding]] = {}
    for f in findings:
        by_case.setdefault(f.case_id, []).append(f)
    mine = part.select(cases)
    todo = [c for c in mine if overwrite or not is_up_to_date(out_dir, c, key)]
    # other parts may be writing here: their temp files are spared (locked, or younger than STALE_AFTER_S)
    _remove_stale(out_dir, {c.case_id for c in cases}, 0.0 if part.is_whole else STALE_AFTER_S)
    jobs = [(c, spec, plans, conf, by_case.get(c.case_id, []), dim, out_dir, key) for c in todo]
    label = "" if part.is_whole else f" ({part.label})"
    map_cases(_preprocess_job, jobs, num_workers, desc=f"preprocess {conf.name}{label}")
    if part.is_whole or all(is_up_to_date(out_dir, c, key) for c in cases):
        write_json(out_dir / "configuration.json", {"configuration": conf.name, "preprocessing_key": key,
                                                    "cases": [c.case_id for c in cases]})
    else:
        log.info("%s%s done; configuration.json follows when the last part is done", conf.name, label)
    return {"written": len(todo), "skipped": len(mine) - len(todo)}


def _remove_stale(out_dir: Path, keep: set[str], min_age: float = 0.0) -> None:
    """Remove arrays of cases no longer in the dataset and temp files left by a killed run (older than min_age)."""
    sweep_partial_files(out_dir, min_age=min_age)  # a write in progress holds its lock: only abandoned ones go
    for f in out_dir.iterdir():
        if f.suffix in (".npy", ".json") and f.name != "configuration.json" and not f.name.startswith("."):
            cid = f.name[: -len(f.suffix)].removesuffix("_seg")
            if cid not in keep:
                os.remove(f)
