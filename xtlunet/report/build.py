"""`xtlunet report`: one self-contained HTML page about a dataset's experiment on one configuration.

Sections: the headline scores, the dataset and its fingerprint, the plan, each arm (weight chain, transfer
coverage, training curves of every fold, cross-validation scores per fold and pooled with CIs), the arm
comparison (compare's tables and figure), the per-case (or per-finding) table sortable by any column with links
to each case's QC montage (or finding ROI), and the environment (versions, devices, wall times).
"""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from xtlunet.dataset.spec import DatasetSpec, find_dataset
from xtlunet.errors import XtlunetError, plural
from xtlunet.evaluation.compare import ARM_COLUMNS, PAIR_COLUMNS, compare_arms
from xtlunet.evaluation.segmentation_metrics import LesionCounts
from xtlunet.evaluation.statistics import bootstrap_mean_ci
from xtlunet.evaluation.summary import ValidationSummary
from xtlunet.paths import preprocessed_root, raw_root, results_root
from xtlunet.plan_and_preprocess import plans_summary
from xtlunet.report import figures
from xtlunet.report.collect import ArmData, collect_arm, environment, find_experiment, resolve_arms
from xtlunet.report.html import anchor, esc, image, number, page, table
from xtlunet.report.qc import LEGEND, case_qc_png
from xtlunet.utils.atomic import write_text

log = logging.getLogger("xtlunet")


@dataclass
class ReportOptions:
    """What to report: arms (default every trained one), held-out evaluations, bootstrap, QC montages."""

    arms: Sequence[str] | None = None
    evaluations: Sequence[Path] = ()
    n_boot: int = 2000
    seed: int = 0
    positive_class: str | None = None
    qc: bool = True


def _ci(score: dict[str, Any]) -> str:
    """'0.712 (95 % CI 0.650–0.770)'."""
    return f"{number(score['value'])} (95 % CI {number(score['ci_low'])}–{number(score['ci_high'])})"


def _optional(find: Any, *args: Any) -> Any:
    """find(*args), or None when a data root or file it needs is missing."""
    try:
        return find(*args)
    except XtlunetError as err:
        log.info("report: %s", err.one_line())
        return None


def load_evaluation(path: Path) -> tuple[str, ValidationSummary]:
    """(name, summary) of an `xtlunet evaluate` output: a summary.json or the folder holding it."""
    path = Path(path)
    file = path / "summary.json" if path.is_dir() else path
    return (path.name if path.is_dir() else path.parent.name), ValidationSummary.load(file)


# ---------------------------------------------------------------- sections

def headline(arms: Sequence[ArmData], evaluations: Sequence[tuple[str, ValidationSummary]], n_boot: int,
             seed: int) -> str:
    """The opening numbers: held-out evaluations first, then each arm's pooled cross-validation score."""
    lines = []
    for name, s in evaluations:
        if s.task == "segmentation":
            value, lo, hi = bootstrap_mean_ci([c.mean_dice() for c in s.cases], n_boot, seed)
            f1 = sum((c.lesions() for c in s.cases), LesionCounts()).f1
            lines.append(f"<b>{esc(name)}</b> (held-out, <code>xtlunet evaluate</code>): mean Dice "
                         f"<b>{number(value)}</b> (95 % CI {number(lo)}–{number(hi)}) over "
                         f"{plural(len(s.cases), 'case')}; lesion F1 {number(f1)} pooled over cases")
        else:
            lines.append(f"<b>{esc(name)}</b> (held-out): {esc(s.one_line())}")
    for arm in arms:
        metric = "Dice" if arm.pooled["metric"] == "dice" else "AUC"
        unit = "case" if metric == "Dice" else "finding"
        lines.append(f"<b>{esc(arm.name)}</b> cross-validation {metric} <b>{_ci(arm.pooled)}</b> over "
                     f"{plural(arm.pooled['n'], unit)} of {plural(len(arm.folds), 'fold')}"
                     + (f" (undefined: {esc(arm.pooled['note'])})" if "note" in arm.pooled else ""))
    return '<div class="headline">' + "<br>".join(lines) + "</div>"


def dataset_section(spec: DatasetSpec | None, fingerprint: Any) -> str:
    """Dataset facts from dataset.json and the fingerprint summary."""
    parts = []
    if spec is not None:
        rows = [{"key": "dataset", "value": spec.name}, {"key": "task", "value": spec.task},
                {"key": "channels", "value": ", ".join(f"{k}: {v}" for k, v in spec.channel_names.items())},
                {"key": "labels" if not spec.is_classification else "classes",
                 "value": ", ".join(f"{k} = {v}" for k, v in (spec.classes if spec.is_classification
                                                               else spec.labels).items())},
                {"key": "training cases", "value": spec.num_training},
                {"key": "file ending", "value": spec.file_ending}]
        parts.append(table(rows, ["key", "value"], ["", ""]))
    else:
        parts.append('<p class="note">The raw dataset ($XTLUNET_raw) was not found: no dataset.json facts, no QC.</p>')
    if fingerprint is not None:
        sp, sh = fingerprint.spacings, fingerprint.shapes_after_crop
        rows = [{"key": "cases fingerprinted", "value": len(fingerprint.cases)},
                {"key": "median spacing (mm)", "value": " × ".join(f"{v:.3g}" for v in np.median(sp, axis=0))},
                {"key": "spacing range (mm)", "value": " … ".join(" × ".join(f"{v:.3g}" for v in f(sp, axis=0))
                                                                 for f in (np.min, np.max))},
                {"key": "median shape after crop", "value": " × ".join(f"{v:.0f}" for v in np.median(sh, axis=0))},
                {"key": "median size kept by the crop", "value": f"{fingerprint.median_relative_size_after_crop():.2f}"},
                {"key": "label voxel counts", "value": ", ".join(f"{k}: {v}" for k, v in fingerprint.label_counts.items())}]
        if fingerprint.findings:
            rows.append({"key": "findings", "value": ", ".join(f"{k}: {v}" for k, v in fingerprint.findings.items()
                                                                if not isinstance(v, (list, dict)))})
        parts.append("<h3>Fingerprint</h3>" + table(rows, ["key", "value"], ["", ""]))
        inten = [{"channel": f"{k} ({fingerprint.channel_names.get(k, '')})", **v}
                 for k, v in fingerprint.intensity.items()]
        cols = ["channel", "mean", "std", "median", "percentile_00_5", "percentile_99_5"]
        parts.append("<h4>Foreground intensities</h4>" + table(inten, cols))
    else:
        parts.append('<p class="note">No fingerprint.json in $XTLUNET_preprocessed for this dataset.</p>')
    return "".join(parts)


def plan_section(arms: Sequence[ArmData], configuration: str) -> str:
    """Each distinct plan the arms trained on: the planner's table and the configuration's design."""
    parts, seen = [], set()
    for arm in arms:
        plans = arm.plans
        if plans.plans_name in seen:
            continue
        seen.add(plans.plans_name)
        conf = plans.configuration(configuration)
        net = conf.architecture
        rows = [{"key": k, "value": v} for k, v in (
            ("plans", f"{plans.plans_name} (planner {plans.planner}, design {plans.design_identity(configuration)})"),
            ("spacing (mm)", " × ".join(f"{v:.3g}" for v in conf.spacing)),
            ("patch", " × ".join(map(str, conf.patch_size))), ("batch size", conf.batch_size),
            ("network", (f"{net.get('family')} {net.get('dim')}D, {len(net.get('widths', []))} stages, widths "
                         f"{', '.join(map(str, net.get('widths', [])))}, norm {net.get('norm', 'instance')}")),
            ("strides", " ".join("x".join(map(str, s)) for s in net.get("strides", []))),
            ("kernels", " ".join("x".join(map(str, s)) for s in net.get("kernel_sizes", []))),
            ("normalisation", ", ".join(conf.normalization)),
            ("memory estimate (GB)", f"{conf.memory_estimate_gb:.3g}"),
            ("axes transposed", str(plans.transpose_forward)),
            ("2D encoder constraint", (conf.pretrained_constraint or {}).get("source", "none")))]
        used = ", ".join(a.name for a in arms if a.plans.plans_name == plans.plans_name)
        parts.append(f"<h3>{esc(plans.plans_name)} (used by {esc(used)})</h3>"
                     + table(rows, ["key", "value"], ["", ""]) + f"<pre>{esc(plans_summary(plans))}</pre>")
    return "".join(parts)


def arm_section(arm: ArmData) -> str:
    """An arm: chain, transfer coverage, the folds' curves on one figure, per-fold and pooled scores."""
    parts = [f"<p>Model folder <code>{esc(arm.folder)}</code>; weights' chain: <b>{esc(arm.chain)}</b></p>"]
    if arm.transfer:
        t = arm.transfer
        rows = [{"group": g, "coverage": t["coverage"].get(g, math.nan),
                 "from source": t["parameters"].get(g, [0, 0])[0], "parameters": t["parameters"].get(g, [0, 0])[1]}
                for g in t["coverage"]]
        parts.append(f"<h4>Transfer report ({esc(t['mode'])}, from <code>{esc(t['source'])}</code>)</h4>"
                     + table(rows, ["group", "coverage", "from source", "parameters"])
                     + f"<p>{esc(t['line'])}</p>")
    parts.append(image(figures.training_curves(arm), f"training curves {arm.name}",
                       f"{esc(arm.name)}: every fold's training curves"))
    metric = "Dice" if arm.pooled["metric"] == "dice" else "AUC"
    rows = [{"fold": str(f.fold), "n": f.score["n"], metric: f.score["value"], "ci_low": f.score["ci_low"],
             "ci_high": f.score["ci_high"], "epochs": len(f.log.records), "train_s": f.log.train_s,
             "final validation": (f.log.validation_line or f.summary.one_line())
                                 + (f" ({f.score['note']})" if "note" in f.score else "")} for f in arm.folds]
    rows.append({"fold": "pooled", "n": arm.pooled["n"], metric: arm.pooled["value"], "ci_low": arm.pooled["ci_low"],
                 "ci_high": arm.pooled["ci_high"]})
    parts.append(table(rows, ["fold", "n", metric, "ci_low", "ci_high", "epochs", "train_s", "final validation"]))
    return "".join(parts)


def comparison_section(arms: Sequence[ArmData], dataset: str, configuration: str, opts: ReportOptions) -> str:
    """compare's result for the arms (tables, notes, figure); a refusal is shown as a note."""
    if len(arms) < 2:
        return "<p>One arm: nothing to compare.</p>"
    full = {a.folder.name.rsplit("__", 1)[0]: a.name for a in arms}
    with tempfile.TemporaryDirectory(prefix="xtlunet-report-") as tmp:
        try:
            result = compare_arms(dataset, configuration, list(full), None, tmp, opts.n_boot, opts.seed,
                                  opts.positive_class, allow_different_plans=True)
        except XtlunetError as err:
            return f'<p class="note">No comparison: {esc(err.one_line())}</p>'
        png = Path(result["outputs"][2]).read_bytes()
    for row in result["arms"] + result["pairs"]:
        row["arm"] = full.get(row["arm"], row["arm"])
        if "vs" in row:
            row["vs"] = full.get(row["vs"], row["vs"])
    task = result["task"]
    unit = "cases" if task == "segmentation" else "findings"
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in result.get("notes", []))
    return (notes + f"<p>{plural(len(result['folds']), 'fold')} ({', '.join(map(str, result['folds']))}), "
            f"{result['n']} {unit} paired across the arms; pairs are arm − vs with a 95 % bootstrap CI over "
            f"{esc(result.get('bootstrap', 'cases'))}.</p><h3>Per arm</h3>" + table(result["arms"], ARM_COLUMNS[task])
            + "<h3>Pairs</h3>" + table(result["pairs"], PAIR_COLUMNS[task])
            + image(png, "comparison figure", "per-case Dice per arm" if task == "segmentation" else "ROC curves"))


def _hd95(case: Any) -> float:
    """Mean HD95 over the case's labels where it is defined."""
    vals = [m.get("hd95", math.nan) for m in case.metrics.values()]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def case_rows(arms: Sequence[ArmData]) -> list[dict[str, Any]]:
    """One row per validated case: its fold and, per arm, mean Dice, lesion F1 and mean HD95."""
    rows: dict[str, dict[str, Any]] = {}
    for arm in arms:
        for f in arm.folds:
            for c in f.summary.cases:
                row = rows.setdefault(c.case_id, {"case": c.case_id, "fold": f.fold})
                row.update({f"{arm.name} Dice": c.mean_dice(), f"{arm.name} lesion F1": c.lesions().f1,
                            f"{arm.name} HD95 mm": _hd95(c)})
    return [rows[k] for k in sorted(rows)]


def qc_section(arms: Sequence[ArmData], spec: DatasetSpec | None, configuration: str, enabled: bool
               ) -> tuple[str, dict[str, str]]:
    """(HTML, {case: anchor}): each validated case's montage per arm, from the folds' validation predictions
    against the raw label."""
    if not enabled:
        return "<p>QC montages were not drawn (--no-qc).</p>", {}
    if spec is None:
        return '<p class="note">No raw dataset: QC montages need imagesTr and labelsTr.</p>', {}
    jobs = [(arm, f.fold, c.case_id) for arm in arms for f in arm.folds for c in f.summary.cases]
    by_case: dict[str, list[str]] = {}
    ending = spec.file_ending
    for arm, fold, case in tqdm(jobs, desc="report qc", unit="case"):
        pred = arm.folder / f"fold_{fold}" / "validation" / f"{case}{ending}"
        image_file, ref = spec.root / "imagesTr" / f"{case}_0000{ending}", spec.root / "labelsTr" / f"{case}{ending}"
        if not (pred.is_file() and image_file.is_file() and ref.is_file()):
            log.warning("report: no QC of %s (%s): prediction, image or label file missing", case, arm.name)
            continue
        conf = arm.plans.configuration(configuration)
        png = case_qc_png(image_file, pred, ref, conf.normalization[0],
                          arm.plans.foreground_intensity_properties.get("0"), title=None)
        by_case.setdefault(case, []).append(image(png, f"QC {case} {arm.name}", f"{esc(arm.name)}, fold {fold}"))
    legend = "; ".join(f'<span style="color:rgb{c}">■</span> {esc(t)}' for t, c in LEGEND)
    parts = [(f"<p>Slices with the most reference or predicted foreground in three orientations, the first channel "
              f"windowed as the plan normalises it. {legend}. Lesions: 26-connected components.</p>")]
    links = {}
    for case in sorted(by_case):
        links[case] = anchor("qc", case)
        parts.append(f'<div id="{links[case]}"><h4>{esc(case)}</h4>{"".join(by_case[case])}</div>')
    return "".join(parts), links


def _finding_rows(arms: Sequence[ArmData]) -> tuple[list[dict[str, Any]], list[int], dict[str, list[float]]]:
    """Per finding: case, finding, patient, label, fold and each arm's probability of the positive class; and the
    labels and scores (findings every arm scored) for the ROC figure."""
    pos = arms[0].pooled.get("positive_class", 1)
    rows: dict[str, dict[str, Any]] = {}
    for arm in arms:
        for f in arm.folds:
            for fs in f.summary.findings:
                row = rows.setdefault(fs.key, {"finding": fs.key, "patient": fs.patient_id or fs.case_id,
                                               "label": fs.label, "fold": f.fold})
                row[f"{arm.name} p{pos}"] = float(fs.probabilities[pos])
    keys = [k for k in sorted(rows) if all(f"{a.name} p{pos}" in rows[k] for a in arms)]
    labels = [int(rows[k]["label"] == pos) for k in keys]
    return [rows[k] for k in sorted(rows)], labels, {a.name: [rows[k][f"{a.name} p{pos}"] for k in keys] for a in arms}


def roi_section(arms: Sequence[ArmData], rows: Sequence[dict[str, Any]], dataset_name: str, configuration: str
                ) -> tuple[str, dict[str, str]]:
    """(HTML, {finding: anchor}): a mid-slice crop of each finding's ROI (planned patch) from the preprocessed
    array of the first arm's plan, first channel."""
    from xtlunet.training.data import findings_of, load_case_arrays
    from xtlunet.utils.arrays import crop_padded

    conf = arms[0].plans.configuration(configuration)
    try:
        folder = preprocessed_root() / dataset_name / conf.data_identifier
    except XtlunetError as err:
        return f'<p class="note">No ROI thumbnails: {esc(err.one_line())}</p>', {}
    if not folder.is_dir():
        return f'<p class="note">No ROI thumbnails: the preprocessed arrays are not in <code>{esc(folder)}</code>.</p>', {}
    wanted = {r["finding"] for r in rows}
    parts, links = [], {}
    for case in tqdm(sorted({k.split("/", 1)[0] for k in wanted}), desc="report rois", unit="case"):
        if not (folder / f"{case}.npy").is_file():
            continue
        arrays = load_case_arrays(folder, case)
        for ref in findings_of([arrays]):
            key = f"{case}/{ref.finding_id}"
            if key not in wanted:
                continue
            crop = crop_padded(np.asarray(arrays.data[:1]), ref.index, conf.patch_size, 0.0)[0]
            mid = crop[crop.shape[0] // 2] if crop.ndim == 3 else crop
            links[key] = anchor("roi", key)
            parts.append(image(figures.roi_thumbnail(mid), f"ROI {key}", f"{esc(key)} (label {ref.label})",
                               element_id=links[key]))
    return '<div class="thumbs">' + "".join(parts) + "</div>", links


def environment_section(env: dict[str, Any]) -> str:
    """Versions (the experiment's and this report's), devices, wall times per stage."""
    rows = [{"what": "this report", **env["report"]}]
    if env["experiment"]:
        rows.insert(0, {"what": "the experiment", **env["experiment"]})
    parts = [table(rows, ["what", "xtlunet", "torch", "python", "platform"]),
             f"<p>Training devices: {esc(', '.join(env['devices']) or 'not recorded')}"
             + (f"; the experiment took {number(env['experiment_wall_s'], 0)} s" if env["experiment_wall_s"] else "")
             + "</p>", "<h3>Wall times per stage</h3>",
             table(env["stages"], ["stage", "device", "epochs", "train_s", "wall_s"],
                   ["stage", "device", "epochs", "epoch time sum (s)", "log span (s)"])]
    return "".join(parts)


# ---------------------------------------------------------------- the report

def write_report(dataset: str | int, configuration: str, out: str | Path | None = None,
                 opts: ReportOptions | None = None) -> Path:
    """Gather, draw and write the report; returns its path (default $XTLUNET_results/DATASET/report_CONFIG.html)."""
    from xtlunet.fingerprint import Fingerprint

    opts = opts or ReportOptions()
    results = results_root()
    name = find_dataset(dataset, results).name
    evaluations = [load_evaluation(Path(p)) for p in opts.evaluations]
    folders = resolve_arms(results, name, configuration, opts.arms)
    arms = [collect_arm(n, f, opts.n_boot, opts.seed, opts.positive_class) for n, f in folders.items()]
    tasks = {a.task for a in arms}
    if len(tasks) != 1:
        raise XtlunetError(f"the arms' results are of different kinds ({', '.join(sorted(tasks))})",
                           fix="report arms of one configuration")
    spec = _optional(lambda: DatasetSpec.load(find_dataset(name, raw_root())))
    fingerprint = _optional(lambda: Fingerprint.load(_existing(preprocessed_root() / name / "fingerprint.json")))
    experiment = find_experiment(results, name, configuration, sorted({a.plans.plans_name for a in arms}))
    sections = [("summary", "Summary", headline(arms, evaluations, opts.n_boot, opts.seed)
                 + image(figures.cv_scores(arms), "cross-validation scores", "per fold and pooled, 95 % CI")),
                ("dataset", "Dataset", dataset_section(spec, fingerprint)),
                ("plan", "Plan", plan_section(arms, configuration))]
    sections += [(anchor("arm", a.name), f"Arm {a.name}", arm_section(a)) for a in arms]
    sections.append(("comparison", "Comparison", comparison_section(arms, name, configuration, opts)))
    sections += _item_sections(arms, spec, name, configuration, opts)
    sections.append(("environment", "Environment", environment_section(environment(experiment, arms))))
    title = f"{name} {configuration}: {', '.join(a.name for a in arms)}"
    path = Path(out) if out else results / name / f"report_{configuration}.html"
    if path.is_dir():
        raise XtlunetError("-o is a folder", path=path, fix="give a file name, e.g. -o report.html")
    write_text(path, page(title, f"xtlunet report of {plural(len(arms), 'arm')}", sections))
    return path


def _existing(path: Path) -> Path:
    """The path, or an XtlunetError when no file is there."""
    if not path.is_file():
        raise XtlunetError("file not found", path=path)
    return path


def _item_sections(arms: Sequence[ArmData], spec: DatasetSpec | None, name: str, configuration: str,
                   opts: ReportOptions) -> list[tuple[str, str, str]]:
    """The per-case (segmentation) or per-finding (classification) table and its images."""
    if arms[0].task == "segmentation":
        rows = case_rows(arms)
        qc, links = qc_section(arms, spec, configuration, opts.qc)
        cols = ["case"] + [f"{a.name} {m}" for a in arms for m in ("Dice", "lesion F1", "HD95 mm")] + ["fold"]
        boxes = image(figures.dice_boxes({a.name: {r["case"]: r[f"{a.name} Dice"] for r in rows
                                                   if f"{a.name} Dice" in r} for a in arms}, f"{name} {configuration}"),
                      "per-case Dice", "per-case Dice per arm")
        return [("cases", "Cases", "<p>Click a column header to sort; a case links to its QC montage.</p>"
                 + table(rows, cols, sortable=True, links=[links.get(r["case"]) for r in rows], link_column="case",
                         element_id="case-table") + boxes),
                ("qc", "QC montages", qc)]
    rows, labels, scores = _finding_rows(arms)
    rois, links = roi_section(arms, rows, name, configuration)
    pos = arms[0].pooled.get("positive_class", 1)
    cols = ["finding", "patient", "label", "fold"] + [f"{a.name} p{pos}" for a in arms]
    cols = [cols[0], *cols[4:], *cols[1:4]]
    roc = image(figures.roc_curves(labels, scores, f"{name} {configuration} (class {pos} vs rest)"), "ROC curves",
                "ROC curves over every fold's validation findings") if len(set(labels)) == 2 else \
        '<p class="note">No ROC curves: the findings hold one class only.</p>'
    return [("findings", "Findings", "<p>Click a column header to sort; a finding links to its ROI.</p>" + roc
             + table(rows, cols, sortable=True, links=[links.get(r["finding"]) for r in rows], link_column="finding",
                     element_id="case-table")),
            ("rois", "Finding ROIs", rois)]
