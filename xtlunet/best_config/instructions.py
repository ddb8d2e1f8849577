"""inference_instructions.json and .txt: the chosen candidate, every candidate's scores, and the exact commands that
predict new cases the way the winner was scored (members, ensemble, post-processing)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtlunet.best_config.models import ModelCV
from xtlunet.evaluation.tables import markdown_table
from xtlunet.utils.atomic import write_json, write_text

if TYPE_CHECKING:
    from xtlunet.best_config.select import Candidate, Selection

FORMAT = "xtlunet.inference_instructions"
VERSION = 1
PLACEHOLDERS = {"INPUT_FOLDER": "the new cases, named as imagesTs (CASE_0000.nii.gz, ...)",
                "OUTPUT_FOLDER": "the final segmentations",
                "OUTPUT_FOLDER_RAW": "the predictions before post-processing",
                "OUTPUT_FOLDER_MODEL_N": "each ensemble member's predictions with probabilities"}
COLUMNS = ("candidate", "pooled_dice", "mean_dice", "lesion_f1", "selected")


def dataset_id(name: str) -> str:
    """501 for Dataset501_BrainMS (the name itself when it has no id)."""
    found = re.match(r"Dataset(\d+)_", name)
    return str(int(found.group(1))) if found else name


def predict_command(model: ModelCV, out: str, save_probabilities: bool) -> str:
    """`xtlunet predict` of one model on INPUT_FOLDER with the folds it was scored with."""
    trainer, plans, configuration = model.parts
    args = ["xtlunet", "predict", "-i", "INPUT_FOLDER", "-o", out, "-d", dataset_id(model.folder.parent.name),
            "-c", configuration, "-tr", trainer, "-p", plans, "-f", *map(str, model.folds)]
    return shlex.join(args + (["--save-probabilities"] if save_probabilities else []))


def commands(selection: Selection) -> list[str]:
    """The commands from new images to final segmentations."""
    winner, pp = selection.winner, selection.postprocessing
    processed = pp is not None and bool(pp.active())
    out = "OUTPUT_FOLDER_RAW" if processed else "OUTPUT_FOLDER"
    if len(winner.members) == 1:
        cmds = [predict_command(winner.members[0], out, False)]
    else:
        outs = [f"OUTPUT_FOLDER_MODEL_{k}" for k in range(1, len(winner.members) + 1)]
        cmds = [predict_command(m, o, True) for m, o in zip(winner.members, outs)]
        cmds.append(shlex.join(["xtlunet", "ensemble", "-i", *outs, "-o", out]))
    if processed:
        cmds.append(shlex.join(["xtlunet", "apply-postprocessing", "-i", out, "-o", "OUTPUT_FOLDER", "-pp",
                                str(selection.postprocessing_file)]))
    return cmds


def _lowres_folds(model: ModelCV) -> list[str]:
    """The folds of a cascade member's lowres model that predict runs (every finished one)."""
    from xtlunet.inference.models import available_folds

    return available_folds(model.previous) if model.previous is not None else []


def notes(selection: Selection) -> list[str]:
    """What the commands need beyond the members' own folders: a cascade member's lowres model."""
    return [f"{m.name} is a cascade stage: its predict runs the lowres model {m.previous.name} first (folds "
            f"{' '.join(_lowres_folds(m))}, every finished one), so that model folder must be in $XTLUNET_results "
            "beside it (xtlunet export-model of the cascade carries it)"
            for m in selection.winner.members if m.previous is not None]


def candidate_rows(selection: Selection) -> list[dict[str, Any]]:
    """One row per candidate: name, pooled Dice, mean Dice, lesion F1 and whether it was selected."""
    rows = []
    for c in selection.candidates:
        overall = c.score.overall
        rows.append({"candidate": c.name, **overall.to_json(), "selected": "yes" if c is selection.winner else ""})
    return rows


def _member(model: ModelCV) -> dict[str, Any]:
    """A member model as written to the JSON file."""
    trainer, plans, configuration = model.parts
    previous = None if model.previous is None else {"model": model.previous.name, "folder": str(model.previous),
                                                    "folds": _lowres_folds(model)}
    return {"trainer": trainer, "plans": plans, "configuration": configuration, "folder": str(model.folder),
            "folds": model.folds, "previous_model": previous}


def _candidate(c: Candidate) -> dict[str, Any]:
    """A candidate as written to the JSON file."""
    return {"name": c.name, "members": [m.name for m in c.members], "folder": str(c.folder),
            **c.score.overall.to_json(), "per_label": {str(k): v.to_json() for k, v in c.score.per_label.items()}}


def instructions_json(selection: Selection) -> dict[str, Any]:
    """The content of inference_instructions.json."""
    pp = selection.postprocessing
    operations = {} if pp is None else {str(k): r.operation for k, r in pp.rules.items()}
    return {"format": FORMAT, "version": VERSION, "dataset": selection.dataset, "folds": selection.folds,
            "selected": {**_candidate(selection.winner), "members": [_member(m) for m in selection.winner.members]},
            "postprocessing": None if pp is None else {"file": str(selection.postprocessing_file),
                                                       "before": pp.overall("before").to_json(),
                                                       "after": pp.overall("after").to_json(),
                                                       "operations": operations},
            "candidates": [_candidate(c) for c in selection.candidates], "skipped": dict(selection.skipped),
            "placeholders": PLACEHOLDERS, "commands": commands(selection), "notes": notes(selection)}


def instructions_text(selection: Selection) -> str:
    """The human-readable inference_instructions.txt."""
    pp = selection.postprocessing
    lines = [f"{selection.dataset}: cross-validation folds {' '.join(map(str, selection.folds))}",
             f"selected: {selection.winner.name}", ""]
    lines += ["post-processing: " + ("disabled" if pp is None else str(selection.postprocessing_file))]
    lines += [f"  {r.describe(k)}" for k, r in sorted(pp.rules.items())] if pp is not None else []
    lines += ["", "Run on new cases (" + "; ".join(f"{k}: {v}" for k, v in PLACEHOLDERS.items()) + "):", ""]
    lines += commands(selection) + [f"note: {n}" for n in notes(selection)]
    lines += ["", "candidates (scores on cross-validation):", "",
                                    markdown_table(candidate_rows(selection), COLUMNS, "{:.4f}")]
    lines += [f"skipped {name}: {why}" for name, why in selection.skipped.items()]
    return "\n".join(lines).rstrip() + "\n"


def write_instructions(selection: Selection, ds_dir: Path) -> list[Path]:
    """Write inference_instructions.json and .txt into the results dataset folder; returns their paths."""
    json_path, txt_path = ds_dir / "inference_instructions.json", ds_dir / "inference_instructions.txt"
    write_json(json_path, instructions_json(selection))
    write_text(txt_path, instructions_text(selection))
    return [json_path, txt_path]
