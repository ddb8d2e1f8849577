"""Predict a folder of new cases (named as imagesTs): preprocess as planned, fold ensemble, export.

Segmentation overlaps its stages (`PredictOptions.overlap`): while the network runs case i, case i+1 is read and
preprocessed (in a thread, or in the -npp processes) and case i−1 is exported (resampled and written) in a thread;
exporting releases the GIL (scipy, numpy, SimpleITK). One export is in flight at a time; the outputs are those of
the sequential order, byte for byte.
"""
from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from xtlunet.utils.console import progress_bar

from xtlunet.dataset.findings import Finding, finding_center, prediction_columns, prediction_row, read_findings
from xtlunet.dataset.loading import load_case
from xtlunet.dataset.spec import Case, channel_of, discover_cases, ending_problem
from xtlunet.errors import XtlunetError, plural
from xtlunet.inference.export import export_prediction
from xtlunet.inference.models import TrainedModel
from xtlunet.inference.mirroring import mirror_combinations
from xtlunet.inference.predict import MAX_AUTO_BATCH, auto_batch_windows, inference_choices, predict_case
from xtlunet.inference.roi import roi_probabilities
from xtlunet.inference.sliding_window import inference_network
from xtlunet.preprocessing.case import preprocess_loaded
from xtlunet.utils.atomic import write_csv
from xtlunet.utils.device import Precision
from xtlunet.utils.parallel import OneAtATime, imap_cases, read_ahead
from xtlunet.utils.sharding import WHOLE, Part, output_lock, write_part_table

log = logging.getLogger("xtlunet")
CASE_FAILURES = (XtlunetError, OSError, RuntimeError, ValueError)   # a case that fails so is reported, the rest go on


@dataclass
class PredictOptions:
    """How to predict: sliding-window step, windows per pass, TTA, outputs, workers."""

    step: float = 0.5
    batch_windows: int | None = None   # None: chosen from the free memory (inference/predict.py)
    tta: bool = True
    save_probabilities: bool = False
    num_workers: int = 1
    overwrite: bool = False
    device: torch.device | str = "cpu"
    findings: Path | None = None
    part: Part = WHOLE  # a job array's part: only its cases are predicted (utils/sharding.py)
    precision: str = "auto"             # auto | fp32 | bf16 (utils/device.resolve_precision)
    tta_axes: tuple[int, ...] | None = None   # a subset of the trained mirror axes; None: all of them
    empty_windows: str = "reuse"        # reuse | skip | run (inference/sliding_window.py)
    overlap: bool = True                # read ahead and export behind the network (False: one stage after another)
    compile: bool = False               # torch.compile the networks (one fixed window batch shape)
    channels_last: bool = True          # channels-last layout of networks and windows on CUDA


@dataclass
class PredictResult:
    """Which cases were written, skipped or failed, and which input files were not used (name → why)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)


def input_cases(in_dir: Path, model: TrainedModel) -> tuple[list[Case], dict[str, str]]:
    """Cases of the input folder (every channel present, no extra channel) and the files it does not use (name →
    why). No usable file at all is an error naming the unused ones; hidden files (.DS_Store) are not inputs."""
    ending, n = model.spec.file_ending, model.spec.num_channels
    if not in_dir.is_dir():
        raise XtlunetError("input folder not found", path=in_dir, fix="give a folder of CASE_0000" + ending + " files")
    unused: dict[str, str] = {}
    for f in sorted(in_dir.iterdir()):
        if f.name.startswith("."):
            continue
        channel = channel_of(f.name, ending)
        if f.is_dir():
            unused[f.name + "/"] = "a folder: only the files directly in the input folder are read"
        elif channel is None:
            unused[f.name] = ending_problem(f.name, ending) or "not CASE_XXXX: XXXX is the 4-digit channel index"
        elif channel[1] >= n:
            raise XtlunetError(f"channel {channel[1]:04d} found, but the model takes {plural(n, 'channel')} "
                               f"(_0000–_{n - 1:04d}: {', '.join(model.spec.channel_names.values())})", path=f,
                               fix="give exactly the channels of dataset.json, in its order")
    cases = discover_cases(in_dir, ending, n)
    if not cases:
        listed = f"; not used: {unused_line(unused)}" if unused else ""
        raise XtlunetError(f"no images named CASE_0000{ending} in the input folder{listed}", path=in_dir,
                           fix=f"name the files as in imagesTs (CASE_XXXX{ending}, the model's file_ending)")
    for case in cases:
        for f in case.image_files:
            if not f.is_file():
                other = [u for u in unused if u.lower().startswith(f.name[: -len(ending)].lower() + ".")]
                hint = f" ({other[0]} is there: {unused[other[0]]})" if other else ""
                raise XtlunetError(f"case {case.case_id} lacks channel file {f.name}{hint}", path=f,
                                   fix=f"give all {n} channels: {', '.join(model.spec.channel_names.values())}")
    return cases, unused


def unused_line(unused: dict[str, str], shown: int = 5) -> str:
    """The unused input files on one line: 'a.nii (it ends in .nii, …); b.txt (…)', the first `shown` of them."""
    items = [f"{name} ({why})" for name, why in list(unused.items())[:shown]]
    more = f"; and {len(unused) - shown} more" if len(unused) > shown else ""
    return "; ".join(items) + more


def check_folders(in_dir: Path, out_dir: Path) -> None:
    """Refuse -o equal to -i, inside it or around it: one run's outputs would become the next run's inputs."""
    i, o = in_dir.resolve(), out_dir.resolve()
    if o == i:
        what = "the output folder (-o) is the input folder (-i): the next run would read the predictions as images"
    elif o.is_relative_to(i):
        what = f"the output folder (-o) lies inside the input folder (-i {in_dir}): keep predictions out of the inputs"
    elif i.is_relative_to(o):
        what = f"the input folder (-i) lies inside the output folder (-o {out_dir}): keep the inputs out of the outputs"
    else:
        return
    raise XtlunetError(what, path=out_dir, fix="give -o a folder outside -i, e.g. a sibling of it")


def _preprocess(args: tuple[Case, TrainedModel, list[Finding]]) -> tuple[np.ndarray, dict[str, Any]]:
    """Load and preprocess one case exactly as the plan says (runs in a worker)."""
    case, model, findings = args
    lc = load_case(case, model.spec, len(model.plans.transpose_forward), with_label=False)
    data, _, props = preprocess_loaded(lc, model.plans, model.conf, findings, [])
    return data, props


def _preprocessed(cases: list[Case], model: TrainedModel, findings: dict[str, list[Finding]],
                  workers: int) -> Iterator[tuple[Case, Any]]:
    """(case, (data, props) or the exception) in order, preprocessing ahead in `workers` processes."""
    jobs = [(c, model_for_workers(model), findings.get(c.case_id, [])) for c in cases]
    for (case, _, _), outcome in imap_cases(_preprocess, jobs, workers):
        yield case, outcome


def model_for_workers(model: TrainedModel) -> TrainedModel:
    """The model without its networks (workers only preprocess)."""
    return TrainedModel(model.folder, model.plans, model.conf, model.spec, [], model.folds, model.mirror_axes)


def predict_folder(in_dir: Path, out_dir: Path, model: TrainedModel, opts: PredictOptions) -> PredictResult:
    """Predict every case of in_dir into out_dir; a failing case is reported by name and leaves no file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise XtlunetError("output path is a file, not a folder", path=out_dir, fix="give a folder for -o")
    check_folders(in_dir, out_dir)
    if model.conf.task == "segmentation":   # checked before anything is written (classification: findings first)
        inference_choices(model, opts, announce=True)
    cases, unused = input_cases(in_dir, model)
    if unused:
        log.warning("%s of %s not used: %s", plural(len(unused), "file"), in_dir, unused_line(unused))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XtlunetError(f"cannot create the output folder ({exc.strerror})", path=out_dir,
                           fix="choose a writable folder for -o") from None
    check_writable(out_dir)
    # one run per output folder (or per part of it); sweeps killed runs' temp files
    with output_lock(out_dir, "predict output folder", opts.part):
        return _predict_cases(cases, out_dir, model, opts, unused)


def _predict_cases(cases: list[Case], out_dir: Path, model: TrainedModel, opts: PredictOptions,
                   unused: dict[str, str]) -> PredictResult:
    """Predict the cases into the (locked) output folder; `unused`: the input files left out, for the result."""
    if model.conf.task == "classification":
        return _predict_findings(cases, out_dir, model, opts, unused)
    result = PredictResult(unused=unused)
    ending = model.spec.file_ending
    mine = opts.part.select(cases)
    todo = [c for c in mine if opts.overwrite or not (out_dir / f"{c.case_id}{ending}").is_file()]
    result.skipped = [c.case_id for c in mine if c not in todo]
    axes, precision = inference_choices(model, opts)
    nets, batch_windows = _networks(model, opts, axes, precision)
    items = _preprocessed(todo, model, {}, opts.num_workers)
    if opts.overlap and opts.num_workers <= 1:   # -npp > 1: its processes already preprocess ahead
        items = read_ahead(items)
    exports: OneAtATime[str] = OneAtATime(opts.overlap, "xtlunet-export")
    with closing(items), progress_bar(total=len(todo), desc="predict", unit="case") as bar:
        try:
            for case, item in items:
                try:
                    logits, props = _forward(case, item, model, nets, opts, axes, precision, batch_windows)
                except CASE_FAILURES as exc:
                    _record([(case.case_id, exc)], result, bar)
                    continue
                _record(exports.submit(case.case_id, export_prediction, logits, props, model.plans,
                                       out_dir / f"{case.case_id}{ending}", opts.save_probabilities), result, bar)
            _record(exports.finish(), result, bar)
        finally:   # also on Ctrl-C: the export in flight ends (its files appear whole) before the lock is released
            exports.close()
    return result


def _networks(model: TrainedModel, opts: PredictOptions, axes: Sequence[int],
              precision: Precision) -> tuple[list[Any], int | None]:
    """The fold networks as prediction runs them (layout, compile) and the windows per pass: with --compile and no
    --batch-windows, chosen once for a full batch, so every case has the one shape that was compiled."""
    nets = [inference_network(n, opts.device, opts.channels_last, opts.compile) for n in model.nets]
    if not opts.compile or opts.batch_windows is not None:
        return nets, opts.batch_windows
    flips = len(mirror_combinations(axes))
    return nets, auto_batch_windows(model.conf, MAX_AUTO_BATCH, flips, opts.device, precision)


def _forward(case: Case, item: Any, model: TrainedModel, nets: list[Any], opts: PredictOptions, axes: Sequence[int],
             precision: Precision, batch_windows: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The fold-averaged logits and the properties of a preprocessed case (its preprocessing failure raised here)."""
    if isinstance(item, Exception):
        raise item
    data, props = item
    if model.previous is not None:   # a cascade: the lowres model's labels become extra input channels
        from xtlunet.cascade.chain import with_previous_stage

        data = with_previous_stage(model, case, data, props, opts)
    logits = predict_case(nets, data, model.conf, model.plans, opts.step, batch_windows, axes, opts.device,
                          precision=precision, empty_windows=opts.empty_windows)
    return logits, props


def _record(done: list[tuple[str, Any]], result: PredictResult, bar: Any) -> None:
    """Count finished cases: written, or failed with the one-line reason (an unexpected error is raised)."""
    for case_id, outcome in done:
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, CASE_FAILURES):
                raise outcome
            result.failed[case_id] = (outcome.one_line() if isinstance(outcome, XtlunetError)
                                      else str(outcome).splitlines()[0])
            log.error("case %s failed: %s", case_id, result.failed[case_id])
        else:
            result.written.append(case_id)
        bar.update()


def check_writable(out_dir: Path) -> None:
    """Refuse an output folder that files cannot be written into, before any case is predicted."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise XtlunetError(f"output folder is not writable ({exc.strerror})", path=out_dir,
                           fix="choose a writable folder for -o, or make this one writable") from None


def _predict_findings(cases: list[Case], out_dir: Path, model: TrainedModel, opts: PredictOptions,
                      unused: dict[str, str]) -> PredictResult:
    """Classification: the ROI of each finding in --findings → OUT/predictions.csv (fold and TTA averaged)."""
    if opts.findings is None:
        raise XtlunetError("a classification model needs the findings to classify", fix="pass --findings CSV "
                           "(case_id, finding_id, patient_id, x, y, z in LPS mm; label optional)")
    findings = read_findings(opts.findings, model.spec.classes, labelled=False, cases=cases)
    by_case: dict[str, list[Finding]] = {}
    for f in findings:
        by_case.setdefault(f.case_id, []).append(f)
    known = {c.case_id for c in cases}
    unknown = sorted(set(by_case) - known)
    if unknown:
        raise XtlunetError(f"findings name cases not in the input folder: {', '.join(unknown[:3])}", path=opts.findings,
                           fix="give the images of every case in --findings, or drop those rows")
    result, rows = PredictResult(unused=unused), []
    names = [n for n, _ in sorted(model.spec.classes.items(), key=lambda kv: kv[1])]
    axes, precision = inference_choices(model, opts, announce=True)
    mine = opts.part.select(cases)  # the checks above cover every case, the work only the part's
    todo = [c for c in mine if c.case_id in by_case]
    idle = {f"{c.case_id}_XXXX{model.spec.file_ending}": "no finding of this case in --findings"
            for c in mine if c.case_id not in by_case}
    if idle:
        log.warning("%d case(s) of the input folder not classified: %s", len(idle), unused_line(idle))
        result.unused.update(idle)
    for case, item in progress_bar(_preprocessed(todo, model, by_case, opts.num_workers), total=len(todo),
                                   desc="predict", unit="case"):
        if isinstance(item, Exception):
            result.failed[case.case_id] = item.one_line() if isinstance(item, XtlunetError) else str(item)
            continue
        data, props = item
        fs = props["findings"]
        centers = [finding_center(f["index"], data.shape) for f in fs]
        probs = roi_probabilities(model.nets, [data] * len(fs), centers, model.conf.patch_size,
                                  model.conf.num_outputs, axes, opts.device, precision.context(opts.device))
        rows += [prediction_row(src, list(p), names, labelled=False) for src, p in zip(by_case[case.case_id], probs)]
        result.written.append(case.case_id)
    columns = prediction_columns(names, labelled=False)
    if not opts.part.is_whole:  # predictions.part-K-of-N.csv; the last part to finish writes predictions.csv
        write_part_table(rows, out_dir / "predictions.csv", columns, opts.part, known)
    elif rows:
        write_csv(rows, out_dir / "predictions.csv", columns)
    return result
