"""The after-training subcommands `find-best-configuration`, `ensemble` and `apply-postprocessing`: parse arguments,
call the stage, print. No stage logic here."""
from __future__ import annotations

import argparse
from pathlib import Path

from xtlunet.cli_types import fold_index, positive_int
from xtlunet.errors import plural


def _cmd_find_best(a: argparse.Namespace) -> None:
    """xtlunet find-best-configuration."""
    from xtlunet.best_config.instructions import COLUMNS, candidate_rows, notes
    from xtlunet.best_config.select import find_best_configuration
    from xtlunet.evaluation.tables import markdown_table

    sel = find_best_configuration(a.d, a.c, a.tr, a.p, a.f, ensembling=not a.no_ensembling,
                                  postprocessing=not a.disable_postprocessing, num_workers=a.np)
    for name, why in sel.skipped.items():
        print(f"skipped {name}: {why}")
    print(f"\n{plural(len(sel.candidates), 'candidate')} on cross-validation folds {' '.join(map(str, sel.folds))} "
          f"(pooled Dice, mean Dice and lesion F1 averaged over the foreground labels)\n")
    print(markdown_table(candidate_rows(sel), COLUMNS, "{:.4f}"))
    print(f"selected: {sel.winner.name}")
    for note in notes(sel):
        print(f"note: {note}")
    if sel.postprocessing is not None:
        print("post-processing, learnt on its cross-validation exports:")
        for label, rule in sorted(sel.postprocessing.rules.items()):
            print(f"  {rule.describe(label)}")
    print("wrote " + ", ".join(map(str, sel.outputs)))


def _add_find_best(sub: argparse._SubParsersAction) -> None:
    """Arguments of `find-best-configuration`."""
    p = sub.add_parser("find-best-configuration", help="choose the best model or ensemble of two on cross-validation, "
                       "learn post-processing, write the inference instructions")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", nargs="+", default=None, help="configurations to consider (default: every one trained)")
    p.add_argument("-tr", nargs="+", default=None, help="trainers to consider (default: every one trained)")
    p.add_argument("-p", nargs="+", default=None, help="plans to consider (default: every one trained)")
    p.add_argument("-f", nargs="+", type=fold_index, default=None, help="folds every model must have finished "
                   "(default: 0 1 2 3 4)")
    p.add_argument("--no-ensembling", action="store_true", help="single models only, no ensembles of two")
    p.add_argument("--disable-postprocessing", action="store_true", help="learn no post-processing")
    p.add_argument("-np", type=positive_int, default=1, help="worker processes for scoring and ensembling")
    p.set_defaults(func=_cmd_find_best)


def _cmd_ensemble(a: argparse.Namespace) -> None:
    """xtlunet ensemble."""
    from xtlunet.best_config.ensemble_folders import ensemble_folders

    done = ensemble_folders([Path(f) for f in a.i], Path(a.o), a.np, a.save_probabilities)
    print(f"{plural(len(done), 'case')} ensembled from {plural(len(a.i), 'folder')} into {a.o}")


def _add_ensemble(sub: argparse._SubParsersAction) -> None:
    """Arguments of `ensemble`."""
    p = sub.add_parser("ensemble", help="average the probabilities (CASE.npz) of several prediction folders")
    p.add_argument("-i", nargs="+", required=True, help="prediction folders written with predict --save-probabilities")
    p.add_argument("-o", required=True, help="output folder")
    p.add_argument("-np", type=positive_int, default=1, help="worker processes")
    p.add_argument("--save-probabilities", action="store_true", help="also write the averaged CASE.npz")
    p.set_defaults(func=_cmd_ensemble)


def _cmd_apply_pp(a: argparse.Namespace) -> None:
    """xtlunet apply-postprocessing."""
    from xtlunet.postprocessing.folder import apply_postprocessing_folder

    done = apply_postprocessing_folder(Path(a.i), Path(a.o), Path(a.pp), a.np)
    print(f"{plural(len(done), 'file')} post-processed into {a.o}")


def _add_apply_pp(sub: argparse._SubParsersAction) -> None:
    """Arguments of `apply-postprocessing`."""
    p = sub.add_parser("apply-postprocessing",
                       help="apply learnt post-processing (postprocessing.json, or nnU-Net v2's postprocessing.pkl) "
                            "to a folder of segmentations")
    p.add_argument("-i", required=True, help="folder of label files")
    p.add_argument("-o", required=True, help="output folder (outside -i)")
    p.add_argument("-pp", required=True,
                   help="postprocessing.json written by find-best-configuration, or nnU-Net v2's postprocessing.pkl")
    p.add_argument("-np", type=positive_int, default=1, help="worker processes")
    p.set_defaults(func=_cmd_apply_pp)


COMMANDS = [_add_find_best, _add_ensemble, _add_apply_pp]
