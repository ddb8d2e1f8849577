"""Issue 12, items 1–4: every CSV row checked field by field, findings checked against their images wherever they
are read (predict, preprocessing), 2D pretraining masks checked against their images, and `evaluate -d`
refusing label values that dataset.json does not declare."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from xtlunet.cli import main
from xtlunet.dataset.csv_table import FLOAT, ID, INT, OPTIONAL_FLOAT, PROBABILITY, Column, read_table
from xtlunet.dataset.findings import read_findings
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import read_image, write_image
from xtlunet.dataset.spec import Case, DatasetSpec
from xtlunet.errors import XtlunetError
from xtlunet.evaluation.evaluate_findings import read_predictions
from xtlunet.inference.folder import PredictOptions, predict_folder
from xtlunet.pretrain.data import load_image_set

HEADER = "case_id,finding_id,patient_id,x,y,z,label"
CLASSES = {"benign": 0, "malignant": 1}
GRID = Geometry((2.0, 1.0, 1.0), (-5.0, -5.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (6, 10, 10))
LABELS = {"background": 0, "lesion": 1, "organ": 2}


def _write(path: Path, text: str) -> Path:
    """Write a text file (creating its folder) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by xtlunet."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _error_lines(err: str) -> list[str]:
    """Lines of stderr that carry an error message."""
    return [line for line in err.splitlines() if "error:" in line]


def _refusal(call, *args, **kwargs) -> str:
    """The one-line text of the XtlunetError that call(*args) raises."""
    with pytest.raises(XtlunetError) as info:
        call(*args, **kwargs)
    text = info.value.one_line()
    assert "\n" not in text and " — fix: " in text
    return text


# ---------------------------------------------------------------- item 1: one CSV reader, field by field

def test_a_field_too_many_no_longer_turns_label_0_into_1(tmp_path):
    """The issue's example: 'c1,2,p1,1,2,3,0,1' was read with label 1 (columns shifted)."""
    path = _write(tmp_path / "findings.csv", f"{HEADER}\nc1,1,p1,1,2,3,1\nc1,2,p1,1,2,3,0,1\n")
    text = _refusal(read_findings, path, CLASSES)
    assert text.startswith("findings.csv line 3, column 'label': the row has 8 fields but the header has 7")
    assert "extra value '1'" in text and str(path) in text and "exactly the header's 7 fields" in text


BAD_FINDINGS = [
    # (rows after the header, line, column, words of the message)
    ("c1,1,p1,1,2,3\n", 2, "label", "6 fields but the header has 7 (no value for this column)"),
    ("c1,1,p1,1,2\n", 2, "z", "no value for this column or the columns after it"),
    ("c1,1,p1,1,2,3,0\nc2,1,p2,1,two,3,0\n", 3, "y", "'two' is not a finite number or empty"),
    ("c1,1,p1,nan,2,3,0\n", 2, "x", "'nan' is not a finite number"),
    ("c1,1,p1,1,2,inf,0\n", 2, "z", "'inf' is not a finite number"),
    ("c1,1,p1,1,,3,0\n", 2, "y", "is empty while other coordinates are given"),
    (",1,p1,1,2,3,0\n", 2, "case_id", "'' is not a non-empty id"),
    ("c1,1,p1,1,2,3,2\n", 2, "label", "'2' is not one of the classes (0 benign, 1 malignant)"),
    ("c1,1,p1,1,2,3,0.5\n", 2, "label", "'0.5' is not one of the classes"),
    ("c1,1,p1,1,2,3,Malignant\n", 2, "label", "'Malignant' is not one of the classes"),
    ("c1,1,p1,1,2,3,\n", 2, "label", "'' is not one of the classes"),
]


@pytest.mark.parametrize("rows, line, column, words", BAD_FINDINGS, ids=[b[3][:30] for b in BAD_FINDINGS])
def test_each_bad_findings_field_names_file_line_and_column(tmp_path, rows, line, column, words):
    path = _write(tmp_path / "findings.csv", f"{HEADER}\n{rows}")
    text = _refusal(read_findings, path, CLASSES)
    assert text.startswith(f"findings.csv line {line}, column '{column}': ") and words in text, text
    assert f"[{path}]" in text


@pytest.mark.parametrize("text, words", [
    ("", "findings.csv is empty (no header line)"),
    ("case_id,finding_id,label,label\nc1,1,0,0\n", "line 1: column 'label' appears twice"),
    ("case_id,finding_id,,label\nc1,1,,0\n", "line 1: header field 3 is empty"),
    ("case_id,finding_id,x,y,label\nc1,1,1,2,0\n", "findings.csv lacks columns z"),
    ("case_id,finding_id\nc1,1\n", "findings.csv lacks columns label"),
    (f"{HEADER}\nc1,1,p1,1,2,3,0\nc1,\"2\"x,p1,1,2,3,0\n", "findings.csv line 3: not valid CSV"),
    (f"{HEADER}\n", "findings.csv has no rows"),
])
def test_bad_findings_files_are_refused_in_one_line(tmp_path, text, words):
    path = _write(tmp_path / "findings.csv", text)
    assert words in _refusal(read_findings, path, CLASSES)


def test_findings_not_utf8_are_refused(tmp_path):
    path = tmp_path / "findings.csv"
    path.write_bytes(f"{HEADER}\nc1,1,p\xe9,1,2,3,0\n".encode("latin-1"))
    assert "findings.csv is not a readable UTF-8 CSV file" in _refusal(read_findings, path, CLASSES)


def test_line_numbers_are_an_editors_despite_quoted_newlines_and_blank_rows(tmp_path):
    """A quoted field spanning two lines, a blank line and an all-empty row shift the later line numbers."""
    rows = 'c1,"note\nsecond line",p1,1,2,3,0\n\n,,,,,,\nc2,1,p2,1,2,3,benign,extra\n'
    path = _write(tmp_path / "findings.csv", f"{HEADER}\n{rows}")
    assert _refusal(read_findings, path, CLASSES).startswith("findings.csv line 6, column 'label': ")


def test_valid_findings_parse_to_the_right_values(tmp_path):
    """Class names or values ('1.0' as pandas writes it), whole-image rows, a BOM, extra columns, spaces."""
    path = tmp_path / "findings.csv"
    path.write_bytes(("\ufeff" + HEADER + ",notes\n"
                      "c1,1,p1, 1.5 ,-2,3e1,malignant,a\n"
                      "c1,2,,0,0,0,1.0,\n"
                      "c2,,p2,,,,0,b\n").encode("utf-8"))
    found = read_findings(path, CLASSES)
    assert [(f.key, f.patient_id, f.position, f.label, f.line) for f in found] == [
        ("c1/1", "p1", (1.5, -2.0, 30.0), 1, 2), ("c1/2", "c1", (0.0, 0.0, 0.0), 1, 3),
        ("c2/0", "p2", None, 0, 4)]


def test_unlabelled_findings_refuse_a_label_that_is_no_class(tmp_path):
    """predict's --findings: an empty label is fine, a wrong one was silently read as 'no label' (−1)."""
    path = _write(tmp_path / "f.csv", "case_id,finding_id,x,y,z,label\nc1,1,1,2,3,\nc1,2,1,2,3,maligant\n")
    assert "f.csv line 3, column 'label': 'maligant' is not one of the classes" in \
        _refusal(read_findings, path, CLASSES, labelled=False)
    path = _write(tmp_path / "g.csv", "case_id,finding_id,x,y,z\nc1,1,1,2,3\n")
    assert [f.label for f in read_findings(path, CLASSES, labelled=False)] == [-1]


def test_read_table_checks_each_kind(tmp_path):
    """The column kinds themselves: int, float, optional float, probability, id; optional columns get defaults."""
    spec = [Column("id", ID), Column("n", INT), Column("v", FLOAT), Column("o", OPTIONAL_FLOAT),
            Column("p", PROBABILITY), Column("absent", INT, required=False, default=7)]
    path = _write(tmp_path / "t.csv", "id,n,v,o,p\na,3,0.5,,1\nb,-2,1e3,4,0\n")
    table = read_table(path, spec, "fix it")
    assert [r.values for r in table.rows] == [
        {"id": "a", "n": 3, "v": 0.5, "o": None, "p": 1.0, "absent": 7},
        {"id": "b", "n": -2, "v": 1000.0, "o": 4.0, "p": 0.0, "absent": 7}]
    for row, column, words in (("a,3.5,1,,0", "n", "'3.5' is not an integer"),
                               ("a,3,x,,0", "v", "'x' is not a finite number"),
                               ("a,3,1,,1.01", "p", "'1.01' is not a probability from 0 to 1")):
        bad = _write(tmp_path / "bad.csv", f"id,n,v,o,p\n{row}\n")
        assert _refusal(read_table, bad, spec, "fix it").startswith(f"bad.csv line 2, column '{column}': {words}")


def _predictions(tmp_path: Path, rows: str) -> Path:
    """A predictions.csv (predict's header) with the given rows."""
    return _write(tmp_path / "pred" / "predictions.csv",
                  f"case_id,finding_id,patient_id,x,y,z,p_benign,p_malignant,predicted\n{rows}")


@pytest.mark.parametrize("rows, line, column, words", [
    ("c1,1,p,1,2,3,0.2,0.8,malignant,x\n", 2, "predicted", "10 fields but the header has 9"),
    ("c1,1,p,1,2,3,0.2,high,malignant\n", 2, "p_malignant", "'high' is not a probability from 0 to 1"),
    ("c1,1,p,1,2,3,0.2,80,malignant\n", 2, "p_malignant", "'80' is not a probability"),
    ("c1,1,p,1,2,3,,0.8,malignant\n", 2, "p_benign", "'' is not a probability"),
    (",1,p,1,2,3,0.2,0.8,malignant\n", 2, "case_id", "'' is not a non-empty id"),
    ("c1,1,p,1,2,3,0.2,0.8,malignant\nc1,1,p,1,2,3,0.3,0.7,malignant\n", 3, "finding_id", "predicted twice"),
])
def test_each_bad_predictions_field_names_file_line_and_column(tmp_path, rows, line, column, words):
    path = _predictions(tmp_path, rows)
    text = _refusal(read_predictions, path)
    assert text.startswith(f"predictions.csv line {line}, column '{column}': ") and words in text, text


def test_evaluate_refuses_a_shifted_predictions_row_in_one_line(tmp_path, capsys):
    """Through the CLI: exit 2, one line with file, line and column, and no output written."""
    ref = _write(tmp_path / "findings.csv", f"{HEADER}\nc1,1,p,1,2,3,malignant\nc2,1,q,1,2,3,benign\n")
    pred = _predictions(tmp_path, "c1,1,p,1,2,3,0.1,0.9,malignant\nc2,1,q,1,2,3,0.8,0.2,benign,0.5\n")
    code = main(["evaluate", "-r", str(ref), "-p", str(pred), "--n-boot", "10"])
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("xtlunet evaluate: error: predictions.csv line 3, column 'predicted': the row has "
                               "10 fields but the header has 9") and str(pred) in lines[0]
    assert sorted(p.name for p in pred.parent.iterdir()) == ["predictions.csv"]


# ---------------------------------------------------------------- item 2: findings against their images, everywhere

def _volume(path: Path) -> Path:
    """A small 3D image on GRID (voxel borders: x and y −5.5..4.5, z −1..11 mm)."""
    write_image(path, np.random.default_rng(0).normal(size=GRID.shape).astype(np.float32), GRID)
    return path


def test_a_finding_outside_its_image_names_file_line_case_id_and_distance(tmp_path):
    cases = [Case(c, [_volume(tmp_path / "in" / f"{c}_0000.nii.gz")]) for c in ("c1", "c2")]
    path = _write(tmp_path / "findings.csv",
                  "case_id,finding_id,x,y,z\nc1,1,0,0,4\nc2,7,24.5,0,4\nc2,8,0,0,4\nc9,1,500,0,0\nc1,2,,,\n")
    text = _refusal(read_findings, path, CLASSES, labelled=False, cases=cases)
    assert text.startswith("findings.csv line 3: finding c2/7 at (24.5, 0.0, 4.0) mm LPS lies outside "
                           "c2_0000.nii.gz by 20.0 mm")  # x 24.5 against the voxel border at 4.5
    assert f"[{path}]" in text and "fix: give the finding's position in LPS world mm" in text
    assert len(read_findings(path, CLASSES, labelled=False)) == 5  # without images: no geometry check


def test_every_finding_outside_is_counted_and_inside_ones_pass(tmp_path):
    cases = [Case("c1", [_volume(tmp_path / "c1_0000.nii.gz")])]
    path = _write(tmp_path / "f.csv", "case_id,finding_id,x,y,z\nc1,1,4.4,-4.9,10.9\nc1,2,0,0,-30\nc1,3,-9,0,4\n")
    text = _refusal(read_findings, path, CLASSES, labelled=False, cases=cases)
    assert text.startswith("f.csv line 3: finding c1/2") and "by 29.0 mm" in text
    assert "(and 1 more finding outside their images)" in text
    path.write_text("case_id,finding_id,x,y,z\nc1,1,4.4,-4.9,10.9\n")
    assert len(read_findings(path, CLASSES, labelled=False, cases=cases)) == 1


def test_predict_refuses_a_finding_outside_its_image_before_predicting(tmp_path):
    """predict --findings goes through the same check (the model's networks are never reached)."""
    inp = tmp_path / "in"
    _volume(inp / "c1_0000.nii.gz")
    findings = _write(tmp_path / "findings.csv", "case_id,finding_id,patient_id,x,y,z\nc1,1,p,0,0,4\nc1,2,p,0,0,-300\n")
    spec = SimpleNamespace(file_ending=".nii.gz", num_channels=1, channel_names={0: "T2"}, classes=CLASSES)
    model = SimpleNamespace(spec=spec, conf=SimpleNamespace(task="classification"), nets=None)
    out = tmp_path / "out"
    text = _refusal(predict_folder, inp, out, model, PredictOptions(findings=findings))
    assert text.startswith("findings.csv line 3: finding c1/2 at (0.0, 0.0, -300.0) mm LPS lies outside "
                           "c1_0000.nii.gz by 299.0 mm")
    assert not (out / "predictions.csv").exists()


def test_plan_and_preprocess_refuses_a_finding_outside_without_verify(examples, capsys):
    """After a first run (fingerprint written, so no integrity check) an edited findings.csv is still checked."""
    argv = ["-q", "plan-and-preprocess", "-d", "502", "-c", "3d_roi", "--gpu-memory-gb", "0.04"]
    assert main(argv) == 0
    path = examples["raw"] / "Dataset502_Prostate" / "findings.csv"
    lines = path.read_text().splitlines()
    case, fid = lines[1].split(",")[:2]
    lines[1] = f"{case},{fid},P001,500.0,-400.0,900.0,0"
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(argv) == 2
    err_lines = _error_lines(capsys.readouterr().err)
    assert len(err_lines) == 1 and f"findings.csv line 2: finding {case}/{fid} at (500.0, -400.0, 900.0) mm LPS " \
        f"lies outside {case}_0000.nii.gz by " in err_lines[0]


# ---------------------------------------------------------------- item 3: 2D masks against their images

def _mask_dataset(root: Path, n: int = 2) -> DatasetSpec:
    """A tiny 2D segmentation dataset (NIfTI, single slice) whose masks lie on their images' grids."""
    grid = Geometry((0.5, 0.5), (10.0, -4.0), (1.0, 0.0, 0.0, 1.0), (40, 30))
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.normal(size=grid.shape).astype(np.float32)
        img[5:35, 0:20] += 1000
        mask = np.zeros(grid.shape, np.uint8)
        mask[10:20, 5:12] = 1
        write_image(root / "imagesTr" / f"m{i}_0000.nii.gz", img, grid)
        write_image(root / "labelsTr" / f"m{i}.nii.gz", mask, grid)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MG"}, "labels": {"background": 0, "mass": 1},
                                                   "numTraining": n, "file_ending": ".nii.gz"}))
    return DatasetSpec.load(root)


@pytest.mark.parametrize("change, words", [({"origin": (14.0, -4.0)}, "origin"), ({"spacing": (0.6, 0.5)}, "spacing")])
def test_pretraining_refuses_a_mask_off_its_images_grid(tmp_path, change, words):
    spec = _mask_dataset(tmp_path / "Dataset900_Masks")
    mask = spec.root / "labelsTr" / "m1.nii.gz"
    arr, geo = read_image(mask, 2)
    write_image(mask, arr, Geometry(**{**geo.__dict__, **change}))
    text = _refusal(load_image_set, spec, "segmentation", (32, 32))
    assert text.startswith("label grid differs from its image m1_0000.nii.gz (label vs image: ")
    assert str(mask) in text and "save the label map with its image's size, spacing, origin" in text
    assert words in text


def test_pretraining_accepts_a_mask_within_tolerance(tmp_path):
    spec = _mask_dataset(tmp_path / "Dataset900_Masks")
    mask = spec.root / "labelsTr" / "m0.nii.gz"
    arr, geo = read_image(mask, 2)
    write_image(mask, arr, Geometry(geo.spacing, (10.0 + 2e-4, -4.0), geo.direction, geo.shape))
    data = load_image_set(spec, "segmentation", (32, 32))
    assert data.masks.shape == (2, 32, 32) and data.masks[0].any()


def test_pretrain_2d_cli_names_the_mask_and_both_sizes(examples, capsys, tmp_path):
    """The mammo example with one mask saved at another size: one line before any training, no checkpoint."""
    root = examples["raw"] / "Dataset503_Mammo"
    mask = sorted((root / "labelsTr").iterdir())[3]
    arr, geo = read_image(mask, 2)
    small = arr[::2, ::2].copy()
    write_image(mask, small, Geometry(geo.spacing, geo.origin, geo.direction, small.shape))
    out = tmp_path / "seg.pth"
    code = main(["pretrain-2d", "-d", "503", "--arch", "plain", "--task", "segmentation", "--epochs", "1",
                 "--iters-per-epoch", "1", "--batch-size", "2", "--input-size", "64", "64", "-o", str(out)])
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"shape {small.shape} vs {arr.shape}" in lines[0] and str(mask) in lines[0]
    assert "label grid differs from its image" in lines[0] and "fix: save the label map" in lines[0]
    assert not out.exists()


# ---------------------------------------------------------------- item 4: evaluate -d and undeclared labels

@pytest.fixture
def seg_folders(roots: dict[str, Path]) -> tuple[Path, Path]:
    """Reference and prediction folders (labels 1 and 2) and dataset 601 declaring background, lesion, organ."""
    ref_dir, pred_dir = roots["raw"].parent / "ref", roots["raw"].parent / "pred"
    for i in range(2):
        ref = np.zeros(GRID.shape, np.uint8)
        ref[1:4, 1:5, 1:5], ref[2:5, 6:9, 6:9] = 1, 2
        write_image(ref_dir / f"case_{i}.nii.gz", ref, GRID)
        write_image(pred_dir / f"case_{i}.nii.gz", ref, GRID)
    _write(roots["raw"] / "Dataset601_Eval" / "dataset.json",
           json.dumps({"channel_names": {"0": "T1"}, "labels": LABELS, "numTraining": 2, "file_ending": ".nii.gz"}))
    return ref_dir, pred_dir


@pytest.mark.parametrize("role", ["reference", "prediction"])
def test_evaluate_d_refuses_undeclared_label_values(seg_folders, capsys, role):
    ref_dir, pred_dir = seg_folders
    path = (ref_dir if role == "reference" else pred_dir) / "case_1.nii.gz"
    arr, geo = read_image(path)
    arr[0, 0, :3] = [3, 3, 7]
    write_image(path, arr, geo)
    code = main(["evaluate", "-r", str(ref_dir), "-p", str(pred_dir), "-d", "601"])
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert f"{role} case_1.nii.gz holds label values 3, 7 that dataset.json does not declare [{path}]" in lines[0]
    assert "the declared labels are 0 background, 1 lesion, 2 organ" in lines[0]
    assert not (pred_dir / "summary.json").exists() and not (pred_dir / "evaluation.csv").exists()


def test_evaluate_d_scores_declared_labels_and_without_d_the_references(seg_folders, capsys):
    """Declared values pass with -d; without -d the undeclared 3 of both files is scored as a label."""
    ref_dir, pred_dir = seg_folders
    assert main(["evaluate", "-r", str(ref_dir), "-p", str(pred_dir), "-d", "601"]) == 0
    rows = _csv_rows(pred_dir / "evaluation.csv")
    assert sorted({r["label"] for r in rows}) == ["1", "2"] and all(float(r["dice"]) == 1.0 for r in rows)
    for folder in (ref_dir, pred_dir):
        arr, geo = read_image(folder / "case_0.nii.gz")
        arr[0, 0, 0] = 3
        write_image(folder / "case_0.nii.gz", arr, geo)
    assert main(["evaluate", "-r", str(ref_dir), "-p", str(pred_dir)]) == 0
    rows = _csv_rows(pred_dir / "evaluation.csv")
    assert sorted({r["label"] for r in rows}) == ["1", "2", "3"]
