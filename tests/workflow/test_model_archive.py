"""`xtlunet export-model` / `import-model`: one verified zip per model, a checked atomic import, same predictions."""
from __future__ import annotations

import hashlib
import json
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from xtlunet.cli import main
from xtlunet.evaluation.segmentation_metrics import evaluate_case
from xtlunet.evaluation.summary import CaseScores, ValidationSummary
from xtlunet.model_archive.card import cv_metrics, fold_entry, render_markdown
from xtlunet.validation import write_cv_summary
from tests.conftest import use_roots

slow = pytest.mark.slow  # end-to-end: trains a tiny model once for the module

DATASET, MODEL = "Dataset501_BrainMS", "ScratchTrainer__xtlunetPlans__3d_fullres"
TRAIN = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--device", "cpu", "--no-final-validation"]


def _sha(data: bytes) -> str:
    """sha256 hex of bytes."""
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def trained(prepared_roots, tmp_path_factory) -> dict[str, Path]:
    """Roots with a one-fold brain model: a validation summary, cv_summary.json and a postprocessing.json."""
    results = tmp_path_factory.mktemp("archive_results")
    roots = {**prepared_roots, "results": results}
    with pytest.MonkeyPatch.context() as mp:
        use_roots(mp, roots)
        assert main(["-q", "train", "501", "3d_fullres", "0", *TRAIN]) == 0
    model = results / DATASET / MODEL
    ref = np.zeros((4, 6, 6), np.uint8)
    ref[1:3, 2:4, 2:4] = 1
    pred = np.roll(ref, 1, axis=2)
    ValidationSummary(task="segmentation", labels=[1], cases=[CaseScores("c0", evaluate_case(pred, ref, (1, 1, 1),
                      [1]))]).save(model / "fold_0" / "validation" / "summary.json")
    write_cv_summary(model)
    (model / "postprocessing.json").write_text('{"keep_largest": false}\n')
    return roots


@pytest.fixture
def model_zip(trained, tmp_path, monkeypatch) -> Path:
    """The model exported with every finished fold (the roots of `trained` set)."""
    use_roots(monkeypatch, trained)
    out = tmp_path / "brain.zip"
    assert main(["-q", "export-model", "-d", "501", "-c", "3d_fullres", "-o", str(out)]) == 0
    return out


def _results_only(monkeypatch: pytest.MonkeyPatch, results: Path) -> None:
    """A machine with only a results root: no raw or preprocessed data."""
    for var in ("XTLUNET_raw", "XTLUNET_preprocessed", "nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XTLUNET_results", str(results))


def _predict(inputs: Path, out: Path) -> dict[str, bytes]:
    """Predict the inputs with the brain model of $XTLUNET_results; label file name → bytes."""
    assert main(["-q", "predict", "-i", str(inputs), "-o", str(out), "-d", "501", "-c", "3d_fullres", "--no-tta",
                 "--device", "cpu"]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.nii.gz"))}


def _error(capsys: pytest.CaptureFixture) -> str:
    """The one error line of a refused command (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@slow
def test_export_import_predicts_the_same_bytes(trained, model_zip, tmp_path, monkeypatch, capsys):
    model = trained["results"] / DATASET / MODEL
    with zipfile.ZipFile(model_zip) as zf:
        card = json.loads(zf.read("model_card.json"))
        members = {name: zf.read(name) for name in zf.namelist()}
    expected = {"plans.json", "dataset.json", "cv_summary.json", "postprocessing.json", "fold_0/checkpoint_final.pth",
                "fold_0/validation/summary.json", "fold_0/training_log.txt", "MODEL_CARD.md"}
    assert set(card["files"]) == expected and set(members) == expected | {"model_card.json"}
    for name, entry in card["files"].items():                  # every file listed with its true hash and size
        assert entry == {"sha256": _sha(members[name]), "size": len(members[name])}, name
        if name != "MODEL_CARD.md":
            assert members[name] == (model / name).read_bytes(), name
    ck = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    cv = json.loads((model / "cv_summary.json").read_text())
    assert card["format_version"] == 1 and card["dataset"] == DATASET and card["model"] == MODEL
    assert (card["trainer"], card["plans_name"], card["configuration"]) == ("ScratchTrainer", "xtlunetPlans",
                                                                          "3d_fullres")
    assert card["folds"] == ["0"] and card["checkpoint"] == "final" and card["task"] == "segmentation"
    assert card["previous_stage"] is None
    assert card["fold_details"]["0"] == {"epoch": 1, "recipe": ck["recipe"], "init": "random"}
    assert card["cv"]["per_fold"] == cv["fold_mean_dice"] and card["cv"]["pooled"] == cv["foreground_mean"]["dice"]
    assert card["versions"]["torch"] == torch.__version__ and card["created"].endswith("+00:00")
    assert f"-d {DATASET} -c 3d_fullres -tr ScratchTrainer -p xtlunetPlans -f 0" in members["MODEL_CARD.md"].decode()

    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in sorted((trained["raw"] / DATASET / "imagesTs").glob("*_000[01].nii.gz"))[:2]:
        shutil.copy(f, inputs / f.name)
    original = _predict(inputs, tmp_path / "pred_original")
    fresh = tmp_path / "fresh_results"
    _results_only(monkeypatch, fresh)
    capsys.readouterr()
    assert main(["import-model", str(model_zip)]) == 0
    assert f"imported {fresh / DATASET / MODEL} from {model_zip}" in capsys.readouterr().out
    imported = fresh / DATASET / MODEL
    assert sorted(str(p.relative_to(imported)) for p in imported.rglob("*") if p.is_file()) == sorted(members)
    assert [p.name for p in (fresh / DATASET).iterdir()] == [MODEL]            # no temp folder left
    again = _predict(inputs, tmp_path / "pred_imported")
    assert len(original) == 1 and again == original                            # byte-identical label files
    # an existing model folder is kept unless --overwrite
    (imported / "fold_0" / "training_log.txt").write_text("edited\n")
    assert main(["import-model", str(model_zip)]) == 2
    assert "the model folder already exists" in _error(capsys)
    assert main(["import-model", str(model_zip), "--overwrite"]) == 0
    assert "replaced" in capsys.readouterr().out
    assert (imported / "fold_0" / "training_log.txt").read_bytes() == members["fold_0/training_log.txt"]
    assert [p.name for p in (fresh / DATASET).iterdir()] == [MODEL]


def _rewrite(src: Path, dst: Path, *, card: Callable[[dict], None] | None = None, drop: tuple[str, ...] = (),
             add: dict[str, bytes] | None = None, tamper: str | None = None, link: str | None = None) -> Path:
    """A copy of an archive with its card edited, members dropped, added, one tampered (same size) or a link."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename in drop:
                continue
            if info.filename == "model_card.json" and card is not None:
                edited = json.loads(data)
                card(edited)
                data = json.dumps(edited).encode()
            if info.filename == tamper:
                data = data.replace(b"3d_fullres", b"3d_fullreZ", 1)
            zout.writestr(info, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zout.writestr(info, "../../../etc/passwd")
    return dst


def _listed(name: str, data: bytes) -> Callable[[dict], None]:
    """A card edit that lists one more file with its true hash."""
    return lambda c: c["files"].__setitem__(name, {"sha256": _sha(data), "size": len(data)})


BAD = b"bad\n"
REFUSED = {
    "dotdot": ({"add": {"../evil.txt": BAD}}, "member '../evil.txt' contains '..'"),
    "dotdot_inside": ({"add": {"fold_0/../../evil.txt": BAD}}, "member 'fold_0/../../evil.txt' contains '..'"),
    "dotdot_listed": ({"add": {"../evil.txt": BAD}, "card": _listed("../evil.txt", BAD)},
                      "member '../evil.txt' listed in the model card contains '..'"),
    "absolute": ({"add": {"/tmp/evil.txt": BAD}}, "member '/tmp/evil.txt' is an absolute path"),
    "symlink": ({"link": "fold_0/link.pth"}, "member 'fold_0/link.pth' is a symbolic link"),
    "tampered": ({"tamper": "plans.json"}, "member 'plans.json' does not match the sha256 in the model card"),
    "version": ({"card": lambda c: c.__setitem__("format_version", 99)}, "format version 99 is not known"),
    "missing": ({"drop": ("fold_0/training_log.txt",)},
                "member 'fold_0/training_log.txt' listed in the model card is missing from the archive"),
    "extra": ({"add": {"fold_0/notes.txt": BAD}}, "member 'fold_0/notes.txt' is not listed in the model card"),
    "no_card": ({"drop": ("model_card.json",)}, "not an xtlunet model archive: no model_card.json"),
    "escaping_dataset": ({"card": lambda c: c.__setitem__("dataset", "../Dataset501_X")},
                         "names no valid dataset folder"),
}


@slow
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_archives_are_refused_before_anything_is_written(model_zip, tmp_path, monkeypatch, capsys, case):
    edits, needle = REFUSED[case]
    bad = _rewrite(model_zip, tmp_path / f"{case}.zip", **edits)
    fresh = tmp_path / "fresh_results"
    fresh.mkdir()
    _results_only(monkeypatch, fresh)
    capsys.readouterr()
    assert main(["import-model", str(bad)]) == 2
    line = _error(capsys)
    assert needle in line and str(bad) in line, line
    assert list(fresh.iterdir()) == []


@slow
def test_export_refusals(trained, model_zip, tmp_path, monkeypatch, capsys):
    use_roots(monkeypatch, trained)
    base = ["export-model", "-d", "501", "-c", "3d_fullres"]
    out = str(tmp_path / "new.zip")
    cases = [([*base, "-tr", "TLTrainer", "-o", out], "no trained TLTrainer model for Dataset501_BrainMS"),
             ([*base, "-f", "0", "1", "-o", out], "fold 1 has no checkpoint_final.pth"),
             ([*base, "--checkpoint", "latest", "-o", out], "unknown checkpoint 'latest'"),
             ([*base, "-o", str(tmp_path)], "-o is a folder"),
             ([*base, "-o", str(model_zip)], "the output file exists")]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        assert needle in _error(capsys), argv
    assert not Path(out).exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    stamp = model_zip.stat().st_mtime_ns
    assert main([*base, "-o", str(model_zip), "--overwrite", "--checkpoint", "best"]) == 0
    assert "(checkpoint_best.pth)" in capsys.readouterr().out and model_zip.stat().st_mtime_ns > stamp
    with zipfile.ZipFile(model_zip) as zf:
        assert json.loads(zf.read("model_card.json"))["checkpoint"] == "best"
        assert "fold_0/checkpoint_best.pth" in zf.namelist() and "fold_0/checkpoint_final.pth" not in zf.namelist()


def test_card_records_the_transfer_and_cv():
    report = {"mode": "center", "source_format": "xtlunet", "chain": ["imagenet:ab12", "mammograms:cd34"],
              "coverage": {"encoder": 0.97, "decoder": 0.0, "head": 0.0}, "rows": []}
    recipe = {"pretrained_sha256": "cd34", "transfer_mode": "center", "seed": 7, "epochs": 3}
    entry = fold_entry({"epoch": 3, "recipe": recipe}, report)
    assert entry["init"] == "imagenet:ab12 → mammograms:cd34" and entry["transfer"]["coverage"]["encoder"] == 0.97
    cv = cv_metrics({"task": "classification", "folds": ["fold_0", "fold_1"], "fold_auc": [0.7, None], "auc": 0.65,
                     "n_findings": 12})
    assert cv == {"metric": "auc", "folds": ["fold_0", "fold_1"], "per_fold": [0.7, None], "pooled": 0.65, "n": 12}
    card = {"dataset": DATASET, "model": "XTLTrainer__xtlunetPlansXTL__3d_fullres", "trainer": "XTLTrainer",
            "plans_name": "xtlunetPlansXTL", "configuration": "3d_fullres", "task": "classification", "folds": ["0"],
            "checkpoint": "best", "inputs": {"channel_names": {"0": "T2"}, "file_ending": ".nii.gz"}, "labels": {},
            "classes": {"benign": 0, "significant": 1}, "fold_details": {"0": entry}, "cv": cv,
            "versions": {"xtlunet": "0"}, "created": "now", "previous_stage": "3d_lowres"}
    text = render_markdown(card)
    assert "fold 0: init imagenet:ab12 → mammograms:cd34, center; encoder coverage 97.0%; 3 epochs, seed 7" in text
    assert "auc: pooled 0.6500; per fold fold_0 0.7000, fold_1 n/a" in text and "--checkpoint best" in text
    assert "predicts after the 3d_lowres model" in text
