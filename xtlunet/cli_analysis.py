"""The analysis subcommands `evaluate` and `compare`: parse arguments, call the stage, print. No stage logic here."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtlunet.cli_types import fold_index, non_negative_int, positive_int
from xtlunet.errors import plural
from xtlunet.report.cli import add_report

if TYPE_CHECKING:
    from xtlunet.dataset.spec import DatasetSpec
    from xtlunet.evaluation.summary import ValidationSummary

SEGMENTATION_COLUMNS = ("label", "name", "n", "dice", "iou", "hd95_mm", "lesion_tpr", "lesion_ppv", "lesion_f1")


def _dataset_spec(dataset: str | None) -> DatasetSpec | None:
    """The DatasetSpec of -d in the raw root, or None without -d."""
    if dataset is None:
        return None
    from xtlunet.dataset.spec import DatasetSpec, find_dataset
    from xtlunet.paths import raw_root

    return DatasetSpec.load(find_dataset(dataset, raw_root()))


def _reference_ending(ref: Path) -> str:
    """The image file ending of the first file in the reference folder."""
    from xtlunet.dataset.io import file_ending
    from xtlunet.errors import XtlunetError

    files = sorted(p for p in ref.iterdir() if p.is_file() and not p.name.startswith(".")) if ref.is_dir() else []
    if not files:
        raise XtlunetError("reference is not a folder of label files (nor a findings CSV)", path=ref,
                           fix="give -r a folder of reference segmentations or a labelled findings.csv")
    return file_ending(files[0])


def _segmentation_table(summary: ValidationSummary, names: dict[int, str]) -> list[dict[str, Any]]:
    """Per class: mean Dice, IoU and HD95 over cases and the lesion-wise rates pooled over cases."""
    rows = []
    per_class, lesions = summary.per_class(), summary.lesion_pooled()
    for lab in summary.labels:
        means = {m: v["mean"] for m, v in per_class[lab].items()}
        pooled = lesions[lab].to_json()
        rows.append({"label": lab, "name": names.get(lab, ""), "n": per_class[lab]["dice"]["n"],
                     "dice": means["dice"], "iou": means["iou"], "hd95_mm": means["hd95"],
                     **{k: pooled[k] for k in ("lesion_tpr", "lesion_ppv", "lesion_f1")}})
    return rows


def _cmd_evaluate(a: argparse.Namespace) -> None:
    """xtlunet evaluate."""
    from xtlunet.evaluation.tables import markdown_table

    spec = _dataset_spec(a.d)
    ref, pred = Path(a.r), Path(a.p)
    if (spec.is_classification if spec is not None else ref.is_file()):
        from xtlunet.evaluation.evaluate_findings import ROW_COLUMNS, evaluate_findings

        summary = evaluate_findings(ref, pred, spec.classes if spec else None, a.o, a.n_boot, a.seed)
        print(f"{plural(summary['n_findings'], 'finding')}\n")
        print(markdown_table(summary["per_class"], ROW_COLUMNS))
    else:
        from xtlunet.evaluation.evaluate_folders import evaluate_segmentation_folders
        from xtlunet.evaluation.tables import write_csv

        ending = spec.file_ending if spec else _reference_ending(ref)
        declared = {v: n for n, v in spec.labels.items()} if spec else None
        rows, result = evaluate_segmentation_folders(ref, pred, spec.foreground_labels() if spec else None, ending,
                                                     declared=declared)
        out = Path(a.o) if a.o else pred
        outputs = [str(write_csv(rows, out / "evaluation.csv")), str(result.save(out / "summary.json"))]
        names = declared or {}
        extra = f"; {plural(len(result.extra_predictions), 'prediction')} without a reference ignored" \
            if result.extra_predictions else ""
        print(f"{plural(len(result.cases), 'case')}{extra}; lesion rates pooled over cases\n")
        print(markdown_table(_segmentation_table(result, names), SEGMENTATION_COLUMNS))
        summary = {"outputs": outputs}
    print("wrote " + ", ".join(summary["outputs"]))


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """Arguments of `evaluate`."""
    p = sub.add_parser("evaluate", help="score predictions against references: segmentation folders (Dice, IoU, "
                       "HD95, lesion-wise detection) or findings (AUC with CI, Youden point, ROC)")
    p.add_argument("-r", required=True, help="reference: folder of label files, or a labelled findings.csv")
    p.add_argument("-p", required=True, help="prediction: folder of label files, or predict's predictions.csv "
                   "(or its folder)")
    p.add_argument("-d", default=None, help="dataset id or name in $XTLUNET_raw: labels, classes and file ending "
                   "from its dataset.json (default: inferred from the files)")
    p.add_argument("-o", default=None, help="output folder (default: the prediction folder)")
    p.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap replicates for AUC intervals")
    p.add_argument("--seed", type=non_negative_int, default=0, help="bootstrap seed")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_compare(a: argparse.Namespace) -> None:
    """xtlunet compare."""
    from xtlunet.evaluation.compare import compare_arms, comparison_markdown

    result = compare_arms(a.d, a.c, a.arms, a.folds, a.o, a.n_boot, a.seed, a.positive_class,
                          a.allow_different_plans)
    print(comparison_markdown(result))
    print("wrote " + ", ".join(result["outputs"]))


def add_compare(sub: argparse._SubParsersAction) -> None:
    """Arguments of `compare`."""
    p = sub.add_parser("compare", help="compare training arms on their cross-validation results (paired Dice "
                       "statistics, or ROC AUCs with DeLong's test)")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("--arms", nargs="+", required=True, help="two or more arms, each TRAINER or TRAINER__PLANS "
                   "(e.g. XTLTrainer TLTrainer ScratchTrainer__xtlunetPlans)")
    p.add_argument("--folds", nargs="+", type=fold_index, default=None, help="folds to pool (default: every fold "
                   "all arms have finished)")
    p.add_argument("-o", default=None, help="output folder (default: $XTLUNET_results/DATASET/compare_CONFIG)")
    p.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap replicates for the intervals")
    p.add_argument("--seed", type=non_negative_int, default=0, help="bootstrap seed")
    p.add_argument("--allow-different-plans", action="store_true", help="compare arms trained on different plans "
                   "(network, patch, spacing): a loud note in the report instead of an error")
    p.add_argument("--positive-class", default=None, help="classification with more than two classes: the class "
                   "(value or name) scored one-vs-rest")
    p.set_defaults(func=_cmd_compare)


COMMANDS = [add_evaluate, add_compare, add_report]
