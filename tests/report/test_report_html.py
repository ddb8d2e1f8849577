"""`xtlunet report` on fake results trees: every section, numbers that match the results, a self-contained page
(no URL anywhere, every image an embedded PNG that decodes), links to each case's QC montage, refusals."""
from __future__ import annotations

import base64
import io
import math
import re
import shutil

import numpy as np
import pytest
from matplotlib.image import imread
from report_trees import CLS, PLANS, SEG, SEG_FOLDS

from xtlunet.cli import main
from xtlunet.errors import XtlunetError
from xtlunet.evaluation.compare import cross_validated_score
from xtlunet.evaluation.summary import ValidationSummary
from xtlunet.report.build import ReportOptions, write_report
from xtlunet.report.collect import parse_training_log
from xtlunet.training.progress import Progress

IMG = re.compile(r'<img src="([^"]*)" alt="([^"]*)"')
SEG_SECTIONS = ("summary", "dataset", "plan", "arm-ScratchTrainer", "arm-XTLTrainer", "comparison", "cases", "qc",
                "environment")


def images(page: str) -> dict[str, np.ndarray]:
    """Every <img> of the page (alt → decoded pixels); each must be an embedded PNG."""
    out = {}
    for src, alt in IMG.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        out[alt] = imread(io.BytesIO(png), format="png")
    return out


def assert_self_contained(page: str) -> None:
    """No URL to anywhere: no http(s), no protocol-relative src/href, only in-page links."""
    assert "http://" not in page and "https://" not in page
    assert not re.search(r'(src|href)\s*=\s*"//', page)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    assert all(s.startswith("data:") for s in re.findall(r'src="([^"]*)"', page))


def section(page: str, ident: str) -> str:
    """The HTML of one section."""
    return re.search(rf'<section id="{ident}">(.*?)</section>', page, re.S).group(1)


def test_segmentation_report_has_every_section(seg_tree, tmp_path):
    out = write_report(601, "3d_fullres", tmp_path / "r.html", ReportOptions(n_boot=200))
    page = out.read_text()
    for ident in SEG_SECTIONS:
        assert f'<section id="{ident}">' in page and f'href="#{ident}"' in page
    assert_self_contained(page)
    pics = images(page)
    # summary figure, 2 training-curve figures, the comparison figure, the Dice box plots, 4 cases × 2 arms of QC
    assert len(pics) == 5 + 8
    assert all(p.shape[0] > 50 and p.shape[1] > 50 for p in pics.values())
    assert {f"QC {c} {a}" for c in ("c0", "c1", "c2", "c3") for a in ("ScratchTrainer", "XTLTrainer")} <= set(pics)


def test_report_numbers_match_the_results(seg_tree, tmp_path):
    page = write_report(601, "3d_fullres", tmp_path / "r.html", ReportOptions(n_boot=200)).read_text()
    folder = seg_tree["results"] / SEG / f"XTLTrainer__{PLANS}__3d_fullres"
    score = cross_validated_score(folder, None, 200, 0)
    head = section(page, "summary")
    assert f"XTLTrainer</b> cross-validation Dice <b>{score['value']:.3f} (95 % CI {score['ci_low']:.3f}" in head
    assert "over 4 cases of 2 folds" in head
    # the per-case table: one row per case, its Dice as the summary has it, and a link to its QC montage
    cases = section(page, "cases")
    assert 'class="sortable" id="case-table"' in cases
    for fold in SEG_FOLDS:
        summary = ValidationSummary.load(folder / f"fold_{fold}" / "validation" / "summary.json")
        for c in summary.cases:
            row = re.search(rf'<tr><td><a href="#qc-{c.case_id}">{c.case_id}</a></td>(.*?)</tr>', cases).group(1)
            values = [float(v) for v in re.findall(r'data-value="([^"]+)"', row)]
            assert values[3] == pytest.approx(c.mean_dice())       # Scratch: Dice, F1, HD95; then XTL's Dice
            assert values[-1] == fold
            assert f'<div id="qc-{c.case_id}">' in page
    # Scratch's even cases hold a false positive: lesion F1 2·1·0.5/1.5
    scratch_c0 = re.search(r'<a href="#qc-c0">c0</a></td>(.*?)</tr>', cases).group(1)
    assert float(re.findall(r'data-value="([^"]+)"', scratch_c0)[1]) == pytest.approx(2 / 3)
    # the arm sections: chain, transfer coverage, every fold with its interval, the parsed curves
    xtl = section(page, "arm-XTLTrainer")
    assert "none → mammograms:abc123" in xtl and "Transfer report (inflate" in xtl
    assert re.search(r"<td>encoder</td><td class=\"num\" data-value=\"1.0\">", xtl)
    assert "<td>pooled</td>" in xtl and xtl.count("<td>0</td>") + xtl.count("<td>1</td>") >= 2
    assert "chain: <b>random</b>" in section(page, "arm-ScratchTrainer")
    comparison = section(page, "comparison")
    assert "p_wilcoxon" in comparison and "4 cases paired" in comparison
    env = section(page, "environment")
    assert "train ScratchTrainer fold 1" in env and "cpu" in env
    plan = section(page, "plan")
    assert "8 × 16 × 16" in plan and "XTLPlanner" in plan
    assert "88" in section(page, "dataset")   # the fingerprint's 0.5th percentile


def test_one_arm_and_held_out_evaluations(seg_tree, tmp_path, capsys):
    held_out = tmp_path / "test_predictions"
    summary = ValidationSummary.load(seg_tree["results"] / SEG / f"XTLTrainer__{PLANS}__3d_fullres" / "fold_0" /
                                     "validation" / "summary.json")
    summary.save(held_out / "summary.json")
    out = tmp_path / "one.html"
    assert main(["report", "-d", "601", "-c", "3d_fullres", "--arms", "ScratchTrainer", "-o", str(out),
                 "--evaluations", str(held_out), "--no-qc", "--n-boot", "100"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = out.read_text()
    head = section(page, "summary")
    assert head.index("test_predictions") < head.index("ScratchTrainer")   # the held-out figure opens the report
    assert f"mean Dice <b>{np.mean([c.mean_dice() for c in summary.cases]):.3f}</b>" in head
    assert "arm-XTLTrainer" not in page and "nothing to compare" in page
    assert "--no-qc" in section(page, "qc") and len(images(page)) == 3


def test_default_output_and_refusals(seg_tree, tmp_path, capsys):
    assert main(["report", "-d", "601", "-c", "3d_fullres", "--no-qc", "--n-boot", "50"]) == 0
    assert (seg_tree["results"] / SEG / "report_3d_fullres.html").is_file()
    capsys.readouterr()
    out = tmp_path / "none.html"
    assert main(["report", "-d", "601", "-c", "3d_fullres", "--arms", "TLTrainer", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "arm TLTrainer has no 3d_fullres model folder" in err[0] and not out.exists()
    with pytest.raises(XtlunetError, match="no trained arm of 2d"):
        write_report(601, "2d", tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_classification_report_has_roc_findings_and_rois(cls_tree, tmp_path):
    page = write_report(602, "3d_roi", tmp_path / "c.html", ReportOptions(n_boot=100)).read_text()
    assert_self_contained(page)
    for ident in ("summary", "dataset", "plan", "comparison", "findings", "rois", "environment"):
        assert f'<section id="{ident}">' in page
    pics = images(page)
    assert "ROC curves" in pics and "comparison figure" in pics
    rois = {k: v for k, v in pics.items() if k.startswith("ROI ")}
    assert len(rois) == 6 and all(v.shape[:2] == (36, 36) for v in rois.values())   # 12×12 mid-slice, ×3
    findings = section(page, "findings")
    assert findings.count("<tr>") == 1 + 6 and 'href="#roi-p0_1"' in findings and 'id="roi-p0_1"' in page
    assert "XTLTrainer</b> cross-validation AUC <b>1.000" in section(page, "summary")
    assert "The raw dataset" in section(page, "dataset")       # no raw folder in this tree: said, not failed


def test_a_fold_of_one_class_gets_no_auc_but_the_report_is_written(cls_tree, tmp_path):
    for arm in ("ScratchTrainer", "XTLTrainer"):
        path = cls_tree["results"] / CLS / f"{arm}__{PLANS}__3d_roi" / "fold_1" / "validation" / "summary.json"
        summary = ValidationSummary.load(path)
        for f in summary.findings:
            f.label = 0
        summary.save(path)
    page = write_report(602, "3d_roi", tmp_path / "c.html", ReportOptions(n_boot=50)).read_text()
    arm = section(page, "arm-XTLTrainer")
    assert "ROC statistics need positive and negative cases" in arm          # fold 1: said in its row
    assert re.search(r'<td>0</td><td class="num" data-value="3.0">3</td><td class="num" data-value="1.0">', arm)
    assert "AUC <b>" in section(page, "summary") and len(images(page)) > 5


def test_training_log_parses_what_progress_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(Progress, "plot", lambda self: None)
    progress = Progress(tmp_path / "training_log.txt", tmp_path / "p.png", "pseudo_dice")
    progress.message("ScratchTrainer D 3d_fullres fold 0: 8 train / 2 val cases, device cuda:0, 1 process, 0 workers")
    records = [{"epoch": e, "train_loss": 1.5 - e / 10, "val_loss": 1.2, "metric": [0.1, math.nan, 0.3][e],
                "lr": 1e-2 / (e + 1), "epoch_time": 3.0 + e} for e in range(3)]
    for r in records[:2]:
        progress.add(r)
    progress.message("continuing from checkpoint_latest.pth at epoch 1")
    for r in records[1:]:
        progress.add(r)
    progress.message("final validation: mean Dice 0.5000 over 2 cases")
    log = parse_training_log((tmp_path / "training_log.txt").read_text())
    assert [r["epoch"] for r in log.records] == [0, 1, 2] and log.metric_name == "pseudo_dice"
    assert log.records[2]["lr"] == pytest.approx(records[2]["lr"], rel=1e-2)
    assert math.isnan(log.records[1]["metric"]) and log.records[2]["metric_ema"] == pytest.approx(0.12, abs=1e-3)
    assert log.device == "cuda:0" and log.validation_line == "mean Dice 0.5000 over 2 cases"
    assert log.train_s == pytest.approx(3.0 + 4.0 + 5.0) and log.wall_s >= 0


@pytest.mark.slow
def test_end_to_end_report_and_predict_qc(trained_roots, tmp_path, capsys):
    """A real fold (1 epoch), its report with the QC of its validation predictions, and predict --qc."""
    assert main(["-q", "train", "501", "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "1", "--val-iters",
                 "1", "--val-no-tta", "--device", "cpu"]) == 0
    out = tmp_path / "report.html"
    assert main(["report", "-d", "501", "-c", "3d_fullres", "-o", str(out), "--n-boot", "100"]) == 0
    page = out.read_text()
    assert_self_contained(page)
    validated = ValidationSummary.load(trained_roots["results"] / "Dataset501_BrainMS" /
                                       "ScratchTrainer__xtlunetPlans__3d_fullres" / "fold_0" / "validation" /
                                       "summary.json")
    pics = images(page)
    assert {f"QC {c.case_id} ScratchTrainer" for c in validated.cases} <= set(pics)
    assert all(p.shape[0] > 100 for p in pics.values())
    arm = section(page, "arm-ScratchTrainer")
    assert re.search(r'<td>0</td><td class="num" data-value="\d+\.0">\d+</td>.*?<td class="num" '
                     r'data-value="1.0">1</td>', arm)                         # fold 0: one epoch parsed from its log
    assert "Dataset501_BrainMS" in section(page, "dataset") and "xtlunetPlans" in section(page, "plan")

    raw = trained_roots["raw"] / "Dataset501_BrainMS"
    pred, bad = tmp_path / "pred", tmp_path / "bad"
    capsys.readouterr()
    assert main(["predict", "-i", str(raw / "imagesTs"), "-o", str(bad), "-d", "501", "-c", "3d_fullres",
                 "--device", "cpu", "--no-tta", "--qc", str(tmp_path / "nowhere")]) == 2
    assert "reference folder" in capsys.readouterr().err and not bad.exists()      # refused before predicting
    labels = tmp_path / "labels"
    shutil.copytree(raw / "labelsTs", labels)
    next(labels.iterdir()).unlink()                                  # a case without a reference: its prediction only
    assert main(["predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", "501", "-c", "3d_fullres",
                 "--device", "cpu", "--no-tta", "--qc", str(labels)]) == 0
    cases = sorted(p.name[:-12] for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    assert sorted(p.stem for p in (pred / "qc").glob("*.png")) == cases
    assert f"wrote {len(cases)} QC montages" in capsys.readouterr().out
    assert all(imread(p).shape[0] > 100 for p in (pred / "qc").glob("*.png"))
