"""The model-sharing subcommands `export-model` and `import-model`: parse arguments, call the stage, print."""
from __future__ import annotations

import argparse
from pathlib import Path

from xtlunet.cli_types import add_model_options
from xtlunet.errors import noun, plural


def _cmd_export(a: argparse.Namespace) -> None:
    """xtlunet export-model."""
    from xtlunet.model_archive import export_model

    res = export_model(a.d, a.c, a.tr, a.p, a.f, a.checkpoint, Path(a.o), a.overwrite)
    card = res.card
    print(f"wrote {res.path}: {card['dataset']} {card['model']}, {noun(len(card['folds']), 'fold')} "
          f"{', '.join(card['folds'])} (checkpoint_{card['checkpoint']}.pth){_previous(card)}, "
          f"{plural(len(card['files']), 'file')}, {res.path.stat().st_size / 2 ** 20:.1f} MiB")


def _previous(card: dict) -> str:
    """', with its 3d_lowres model NAME (folds …)' for a cascade archive carrying it, else ''."""
    prev = card.get("previous_model")
    return f", with its {prev['configuration']} model {prev['model']} (folds {', '.join(prev['folds'])})" if prev \
        else ""


def _add_export(sub: argparse._SubParsersAction) -> None:
    """Arguments of `export-model`."""
    p = sub.add_parser("export-model", help="write a trained model (its folds, plans, records and a model card "
                       "with every file's sha256) into one zip")
    add_model_options(p, "folds to export (default: every finished fold)")
    p.add_argument("-o", required=True, help="output zip file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_export)


def _cmd_import(a: argparse.Namespace) -> None:
    """xtlunet import-model."""
    from xtlunet.model_archive import import_model
    from xtlunet.model_archive.card import predict_command

    res = import_model(Path(a.archive), a.overwrite)
    print(f"{'replaced' if res.replaced else 'imported'} {res.folder} from {a.archive} "
          f"({noun(len(res.card['folds']), 'fold')} {', '.join(res.card['folds'])}){_previous(res.card)}; predict "
          f"with: {predict_command(res.card)}")


def _add_import(sub: argparse._SubParsersAction) -> None:
    """Arguments of `import-model`."""
    p = sub.add_parser("import-model", help="check a model zip (format, member paths, every sha256) and unpack it "
                       "into $XTLUNET_results")
    p.add_argument("archive", help="zip written by export-model")
    p.add_argument("--overwrite", action="store_true", help="replace the model folder if it exists")
    p.set_defaults(func=_cmd_import)


COMMANDS = [_add_export, _add_import]
