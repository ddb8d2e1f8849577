"""The `report` subcommand: parse arguments, call write_report, print its path. Registered in cli_analysis.COMMANDS."""
from __future__ import annotations

import argparse
from pathlib import Path

from xtlunet.cli_types import non_negative_int, positive_int


def qc_reference(value: str) -> str:
    """`predict --qc LABELS`: a folder that exists (checked before anything is predicted)."""
    if not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"reference folder '{value}' not found (give a folder of label files named "
                                         "CASE<file_ending>, or --qc alone for the prediction's contours only)")
    return value


def _cmd_report(a: argparse.Namespace) -> None:
    """xtlunet report."""
    from xtlunet.report.build import ReportOptions, write_report

    opts = ReportOptions(arms=a.arms, evaluations=[Path(p) for p in a.evaluations], n_boot=a.n_boot, seed=a.seed,
                         positive_class=a.positive_class, qc=not a.no_qc)
    print(f"wrote {write_report(a.d, a.c, a.o, opts)}")


def add_report(sub: argparse._SubParsersAction) -> None:
    """Arguments of `report`."""
    p = sub.add_parser("report", help="one self-contained HTML page of an experiment: dataset, plan, every arm's "
                       "curves and scores, the comparison, per-case scores with QC montages, environment")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("--arms", nargs="+", default=None, help="arms, each TRAINER or TRAINER__PLANS (default: every "
                   "arm of the configuration with a finished fold)")
    p.add_argument("-o", default=None, help="output file (default: $XTLUNET_results/DATASET/report_CONFIG.html)")
    p.add_argument("--evaluations", nargs="+", default=[], metavar="SUMMARY", help="`xtlunet evaluate` outputs "
                   "(summary.json or its folder, e.g. a test set's predictions), shown first")
    p.add_argument("--no-qc", action="store_true", help="no QC montages of the validation cases (faster)")
    p.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap replicates for the intervals")
    p.add_argument("--seed", type=non_negative_int, default=0, help="bootstrap seed")
    p.add_argument("--positive-class", default=None, help="classification with more than two classes: the class "
                   "(value or name) scored one-vs-rest")
    p.set_defaults(func=_cmd_report)
