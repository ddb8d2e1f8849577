"""`xtlunet plan-and-preprocess` end to end on the built-in examples."""
from __future__ import annotations

import json

import numpy as np
import pytest

from xtlunet.cli import main
from xtlunet.dataset.geometry import Geometry
from xtlunet.plans import Plans

BUDGET = ["--gpu-memory-gb", "0.2"]


def _error_lines(err: str) -> list[str]:
    """The lines of stderr that carry an error message."""
    return [line for line in err.splitlines() if "error:" in line]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI and capture its output."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_brain_ms_plans_and_arrays(examples, capsys):
    code, out, err = _run(capsys, "plan-and-preprocess", "-d", "501", *BUDGET, "--verify")
    assert code == 0, err
    pre = examples["preprocessed"] / "Dataset501_BrainMS"
    plans = Plans.load(pre / "xtlunetPlans.json")
    assert "3d_fullres" in plans.configurations and "2d" in plans.configurations
    assert "3d_fullres" in out and "patch" in out           # the summary table
    fp = json.loads((pre / "fingerprint.json").read_text())
    assert len(fp["cases"]) == 5 and set(fp["intensity"]) == {"0", "1"}
    full = plans.configuration("3d_fullres")
    sp = np.array([c["spacing"] for c in fp["cases"]])[:, plans.transpose_forward]
    assert full.spacing[0] == max(full.spacing)              # coarse axis first
    assert full.spacing[0] <= np.median(sp[:, 0]) + 1e-6
    assert all(p % s == 0 for p, s in zip(full.patch_size, full.network().total_stride()))
    assert full.batch_size >= 2 and full.memory_estimate_gb <= 0.2
    # nnU-Net's Dice choice: per sample for a 3d_fullres without 3d_lowres, batch Dice for 2d
    assert full.batch_dice is ("3d_lowres" in plans.configurations) and plans.configuration("2d").batch_dice
    folder = pre / full.data_identifier
    for case in [c["case_id"] for c in fp["cases"]]:
        data = np.load(folder / f"{case}.npy", mmap_mode="r")
        seg = np.load(folder / f"{case}_seg.npy", mmap_mode="r")
        props = json.loads((folder / f"{case}.json").read_text())
        assert data.dtype == np.float32 and data.shape[0] == 2 and seg.shape == data.shape[1:]
        assert list(data.shape[1:]) == props["shape_after_resample"]
        assert set(np.unique(seg)) <= {-1, 0, 1} and (seg == 1).any()
        outside = np.asarray(seg) == -1          # background outside the body mask: masked channels are 0 there
        assert outside.any()
        for c in (c for c, masked in enumerate(full.use_mask_for_norm) if masked):
            assert (np.abs(np.asarray(data[c])[outside]) < 0.25).mean() > 0.95   # 0 up to cubic ringing
        locs = np.array(props["class_locations"]["1"])
        assert len(locs) > 0 and np.all(seg[tuple(locs.T)] == 1)
        Geometry.from_json(props["geometry"])
        # z-score inside the non-zero mask
        assert abs(float(np.asarray(data[0])[np.asarray(data[0]) != 0].mean())) < 0.3
        expected = [round(s * sp / t) for s, sp, t in zip(props["shape_after_crop"], props["spacing"], full.spacing)]
        assert [max(1, e) for e in expected] == props["shape_after_resample"]
    two_d = plans.configuration("2d")
    assert two_d.dim == 2 and len(two_d.patch_size) == 2


def test_rerun_skips_and_overwrite_redoes(examples, capsys):
    assert _run(capsys, "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", *BUDGET)[0] == 0
    folder = examples["preprocessed"] / "Dataset501_BrainMS" / "xtlunetPlans_3d_fullres"
    stamps = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    assert _run(capsys, "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", *BUDGET)[0] == 0
    again = {f.name: f.stat().st_mtime_ns for f in folder.iterdir() if f.name != "configuration.json"}
    assert all(stamps[k] == v for k, v in again.items())
    assert _run(capsys, "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", *BUDGET, "--overwrite")[0] == 0
    redone = {f.name: f.stat().st_mtime_ns for f in folder.glob("*.npy")}
    assert all(redone[k] > stamps[k] for k in redone)
    assert not [f for f in folder.iterdir() if ".partial" in f.name]


def test_prostate_roi_plan_and_findings(examples, capsys):
    code, out, err = _run(capsys, "plan-and-preprocess", "-d", "502", *BUDGET)
    assert code == 0, err
    pre = examples["preprocessed"] / "Dataset502_Prostate"
    plans = Plans.load(pre / "xtlunetPlans.json")
    roi = plans.configuration("3d_roi")
    assert roi.task == "classification" and roi.roi_mm and roi.num_outputs == 2
    assert set(plans.configurations) == {"3d_roi"}          # every planned configuration trains (no 2d for 3D ROIs)
    code, _, err = _run(capsys, "plan-and-preprocess", "-d", "502", "-c", "2d", *BUDGET)
    assert code == 2 and "'2d' is not planned for Dataset502_Prostate" in err and "use -c 3d_roi" in err
    folder = pre / roi.data_identifier
    n = 0
    for meta in folder.glob("prostate_*.json"):
        props = json.loads(meta.read_text())
        data = np.load(folder / f"{props['case_id']}.npy", mmap_mode="r")
        assert data.shape[0] == 3
        for f in props["findings"]:
            idx = np.array(f["index"])
            assert np.all(idx >= -0.5) and np.all(idx <= np.array(data.shape[1:]) - 0.5)
            n += 1
    assert n >= 20
    assert "resampled" in err or any(c for c in json.loads((pre / "fingerprint.json").read_text())["resampled_channels"])


def test_mammo_is_planned_2d_only(examples, capsys):
    code, out, err = _run(capsys, "plan-and-preprocess", "-d", "Dataset503_Mammo", *BUDGET)
    assert code == 0, err
    plans = Plans.load(examples["preprocessed"] / "Dataset503_Mammo" / "xtlunetPlans.json")
    assert list(plans.configurations) == ["2d"]
    code, _, err = _run(capsys, "plan-and-preprocess", "-d", "503", "-c", "3d_fullres", *BUDGET)
    assert code == 2 and "2D" in err and len(_error_lines(err)) == 1


def test_xtl_planner_matches_encoder(examples, capsys):
    code, out, err = _run(capsys, "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--pretrained", "resnet18",
                          "--gpu-memory-gb", "1", "--no-pp")
    assert code == 0, err
    plans = Plans.load(examples["preprocessed"] / "Dataset501_BrainMS" / "xtlunetPlansXTL.json")
    conf = plans.configuration("3d_fullres")
    arch = conf.network()
    assert arch.family == "resnet18" and arch.widths == [64, 64, 128, 256, 512] and arch.dim == 3
    assert [k[1:] for k in arch.kernel_sizes] == [[7, 7], [3, 3], [3, 3], [3, 3], [3, 3]]
    assert all(k[0] in (1, k[1]) for k in arch.kernel_sizes)
    assert conf.pretrained_constraint["family"] == "resnet18" and "rule" in conf.pretrained_constraint
    assert "constrained by 2D encoder resnet18" in out
    assert arch.norm == "instance" and conf.pretrained_constraint["transfer_norm"] == "instance"


def test_transfer_norm_batch_is_recorded_in_the_plan(examples, capsys):
    code, out, err = _run(capsys, "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--pretrained", "resnet18",
                          "--transfer-norm", "batch", "--gpu-memory-gb", "1", "--no-pp", "--plans-name", "bn")
    assert code == 0, err
    plans = Plans.load(examples["preprocessed"] / "Dataset501_BrainMS" / "bn.json")
    conf = plans.configuration("3d_fullres")
    assert conf.network().norm == "batch"
    assert conf.pretrained_constraint["transfer_norm"] == "batch"
    assert "running statistics" in conf.pretrained_constraint["transfer_norm_reason"]


@pytest.mark.parametrize("argv, needle", [
    (["plan-and-preprocess", "-d", "599"], "unknown dataset"),
    (["plan-and-preprocess", "-d", "Dataset501_BrainM"], "did you mean 'Dataset501_BrainMS'"),
    (["plan-and-preprocess", "-d", "501", "-c", "3d_fulres"], "did you mean '3d_fullres'"),
    (["plan-and-preprocess", "-d", "501", "-pl", "DefaultPlaner"], "did you mean 'DefaultPlanner'"),
    (["plan-and-preprocess", "-d", "501", "--pretrained", "resnet19"], "neither a checkpoint file nor"),
    (["plan-and-preprocess", "-d", "501", "--transfer-norm", "batch"], "DefaultPlanner does not take --transfer-norm"),
])
def test_bad_arguments_give_one_line(examples, capsys, argv, needle):
    code, out, err = _run(capsys, *argv, *BUDGET)
    assert code == 2
    assert needle in err and len(_error_lines(err)) == 1 and "Traceback" not in err


def test_unset_root_names_the_variable(monkeypatch, capsys):
    for v in ("XTLUNET_raw", "nnUNet_raw"):
        monkeypatch.delenv(v, raising=False)
    code, out, err = _run(capsys, "plan-and-preprocess", "-d", "501")
    assert code == 2 and "XTLUNET_raw" in err
