"""A catalogue of bad inputs across the commands: each one exits with code 2 and one `error:` line that names
the file or value and the fix, prints no traceback, and leaves no new, changed or half-written output file.

Every entry is (id, kind, setup, argv, needles). The kind decides the roots the entry runs on:
- raw:     fresh raw/preprocessed/results roots holding small copies of the built-in examples
           (dataset entries run the full integrity check, `plan-and-preprocess -d ID --verify`);
- train:   the session's planned examples, copied into this entry's preprocessed root, fresh results;
- predict: a one-fold brain model trained once for this module, an input folder with one test case.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.bad_input_setups import (brain, no_dataset_json, json_without, json_invalid, num_training_wrong,
                                    missing_channel, extra_channel, undeclared_label, float_label, nan_image,
                                    label_shape, label_spacing, channel_origin, label_direction, four_d, zero_bytes,
                                    truncated, empty_images, finding_outside, findings_missing_columns,
                                    findings_unknown_case, findings_two_patients, roots_unset, brain_planned,
                                    patient_ids_differ, random_bytes, vgg_weights, no_encoder_weights,
                                    pickled_object, one_case, predict_extra_channel, predict_one_channel,
                                    predict_empty, output_is_file, output_parent_is_file, output_read_only)
from tests.bad_inputs_helpers import BRAIN, PROSTATE, Env, error_lines, partial_files, set_roots, snapshot
from xtlunet.cli import main

BUDGET = ["--gpu-memory-gb", "0.04"]
VERIFY_BRAIN = ["plan-and-preprocess", "-d", "501", "--verify", *BUDGET]
VERIFY_PROSTATE = ["plan-and-preprocess", "-d", "502", "--verify", *BUDGET]
TRAIN = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--device", "cpu", "--no-final-validation"]
PREDICT = ["predict", "-i", "{in}", "-o", "{out}", "-d", "501", "-c", "3d_fullres", "--no-tta", "--device", "cpu"]
XTL_PLAN = ["501", "3d_fullres", "0", "-p", "xtlunetPlansXTL", *TRAIN]

# ---------------------------------------------------------------- the catalogue

CATALOGUE: list[tuple[str, str, Callable[[Env], None], list[str], list[str]]] = [
    # dataset.json
    ("missing_dataset_json", "raw", no_dataset_json, VERIFY_BRAIN,
     ["dataset.json is missing", f"{BRAIN}/dataset.json", "create dataset.json"]),
    ("json_without_channel_names", "raw", json_without("channel_names"), VERIFY_BRAIN,
     ["lacks channel_names", f"{BRAIN}/dataset.json", "add the missing keys"]),
    ("json_without_labels", "raw", json_without("labels"), VERIFY_BRAIN,
     ["lacks labels", f"{BRAIN}/dataset.json", "add the missing keys"]),
    ("json_without_file_ending", "raw", json_without("file_ending"), VERIFY_BRAIN,
     ["lacks file_ending", f"{BRAIN}/dataset.json", "add the missing keys"]),
    ("json_syntax_error", "raw", json_invalid, VERIFY_BRAIN,
     ["invalid JSON", f"{BRAIN}/dataset.json", "repair"]),
    ("num_training_wrong", "raw", num_training_wrong, VERIFY_BRAIN,
     ["numTraining is 7 but imagesTr holds 3 cases", '"numTraining": 3', f"{BRAIN}/dataset.json"]),
    # files and channels
    ("missing_channel_file", "raw", missing_channel, VERIFY_BRAIN,
     ["brainms_0002_0001.nii.gz", "channel 0001 (T1) of case 'brainms_0002' is missing", "add brainms_0002_0001"]),
    ("extra_unknown_channel", "raw", extra_channel, VERIFY_BRAIN,
     ["brainms_0002_0002.nii.gz", "unknown channel 0002", "remove the file"]),
    ("zero_byte_nifti", "raw", zero_bytes, VERIFY_BRAIN,
     ["brainms_0002_0000.nii.gz", "0 bytes", "re-"]),
    ("truncated_nifti", "raw", truncated, VERIFY_BRAIN,
     ["brainms_0002_0000.nii.gz", "truncated", "re-"]),
    ("four_d_image", "raw", four_d, VERIFY_BRAIN,
     ["brainms_0002_0000.nii.gz", "image is 4D", "dataset is 3D", "store each channel as its own 3D file"]),
    ("empty_imagesTr", "raw", empty_images, VERIFY_BRAIN,
     [f"{BRAIN}/imagesTr", "imagesTr holds no CASE_XXXX.nii.gz files", "put the training images there"]),
    # voxels and labels
    ("undeclared_label_values", "raw", undeclared_label, VERIFY_BRAIN,
     ["labelsTr/brainms_0002.nii.gz", "label values 5 are not declared", "add the values to \"labels\""]),
    ("float_label_map", "raw", float_label, VERIFY_BRAIN,
     ["labelsTr/brainms_0002.nii.gz", "non-integer values", "store integer labels"]),
    ("nan_inf_in_image", "raw", nan_image, VERIFY_BRAIN,
     ["brainms_0002_0000.nii.gz", "4 NaN/Inf voxels", "replace non-finite values"]),
    # geometry
    ("label_shape_mismatch", "raw", label_shape, VERIFY_BRAIN,
     ["labelsTr/brainms_0002.nii.gz", "label grid differs", "shape", "save the label map with its image's size"]),
    ("label_spacing_mismatch", "raw", label_spacing, VERIFY_BRAIN,
     ["labelsTr/brainms_0002.nii.gz", "label grid differs", "spacing"]),
    ("channel_origin_mismatch", "raw", channel_origin, VERIFY_BRAIN,
     ["brainms_0002_0001.nii.gz", "channel grid differs from brainms_0002_0000.nii.gz", "origin",
      "resample all channels"]),
    ("label_direction_mismatch", "raw", label_direction, VERIFY_BRAIN,
     ["labelsTr/brainms_0002.nii.gz", "label grid differs", "direction"]),
    # findings (classification)
    ("finding_outside_image", "raw", finding_outside, VERIFY_PROSTATE,
     [f"{PROSTATE}/findings.csv", "prostate_0001/1 at (500.0, -400.0, 900.0) mm LPS lies outside",
      "prostate_0001_0000.nii.gz"]),
    ("findings_missing_columns", "raw", findings_missing_columns, VERIFY_PROSTATE,
     [f"{PROSTATE}/findings.csv", "lacks columns label", "the header must be"]),
    ("findings_unknown_case", "raw", findings_unknown_case, VERIFY_PROSTATE,
     [f"{PROSTATE}/findings.csv", "name case 'prostate_0999', which imagesTr does not hold", "fix the case_id"]),
    ("findings_case_with_two_patients_verify", "raw", findings_two_patients, VERIFY_PROSTATE,
     [f"{PROSTATE}/findings.csv", "case prostate_0001 has findings with different patient ids (P999, P001)",
      "same patient_id"]),
    ("findings_case_with_two_patients_train", "train", patient_ids_differ, ["train", "502", "3d_roi", "0", *TRAIN],
     [f"{PROSTATE}/findings.csv", "has findings with different patient ids", "same patient_id"]),
    # roots and names
    ("data_root_unset", "raw", roots_unset, VERIFY_BRAIN,
     ["XTLUNET_raw is not set", "export XTLUNET_raw=/path/to/raw"]),
    ("unknown_dataset_id", "raw", brain, ["plan-and-preprocess", "-d", "Dataset501_BrainM", *BUDGET],
     ["unknown dataset 'Dataset501_BrainM'", "did you mean 'Dataset501_BrainMS'", "available: Dataset501_BrainMS"]),
    ("unknown_dataset_number", "train", brain_planned, ["train", "599", "3d_fullres", "0", *TRAIN],
     ["unknown dataset '599'", "available: Dataset501_BrainMS"]),
    ("unknown_configuration_plan", "raw", brain, ["plan-and-preprocess", "-d", "501", "-c", "3d_fulres", *BUDGET],
     ["unknown configuration '3d_fulres'", "did you mean '3d_fullres'"]),
    ("unknown_configuration_train", "train", brain_planned, ["train", "501", "3d_fulres", "0", *TRAIN],
     ["'3d_fulres'", "did you mean '3d_fullres'"]),
    ("unknown_planner", "raw", brain, ["plan-and-preprocess", "-d", "501", "-pl", "DefaultPlaner", *BUDGET],
     ["unknown planner 'DefaultPlaner'", "did you mean 'DefaultPlanner'"]),
    ("unknown_trainer", "train", brain_planned, ["train", "501", "3d_fullres", "0", "-tr", "XTLTrainr", *TRAIN],
     ["unknown trainer 'XTLTrainr'", "did you mean 'XTLTrainer'"]),
    ("unknown_transfer_mode", "train", brain_planned,
     ["train", *XTL_PLAN, "-tr", "TLTrainer", "--transfer-mode", "inflat"],
     ["unknown transfer mode 'inflat'", "did you mean 'inflate'"]),
    ("fold_out_of_range", "train", brain_planned, ["train", "501", "3d_fullres", "5", *TRAIN],
     ["fold '5' is not valid", "use a fold 0–4 or 'all'"]),
    ("continue_without_checkpoint", "train", brain_planned, ["train", "501", "3d_fullres", "0", "--continue", *TRAIN],
     ["no checkpoint to continue from", "ScratchTrainer__xtlunetPlans__3d_fullres/fold_0",
      "start the fold without --continue"]),
    # pretrained files
    ("pretrained_random_bytes", "train", random_bytes,
     ["train", *XTL_PLAN, "-tr", "TLTrainer", "--pretrained", "{tmp}/random.pth"],
     ["not a PyTorch checkpoint", "random.pth", "pass a file written by torch.save"]),
    ("pretrained_other_family", "train", vgg_weights,
     ["train", *XTL_PLAN, "-tr", "TLTrainer", "--pretrained", "{tmp}/vgg16_bn.pth"],
     ["vgg16_bn", "resnet18", "vgg16_bn.pth"]),
    ("pretrained_without_encoder", "train", no_encoder_weights,
     ["train", *XTL_PLAN, "-tr", "TLTrainer", "--pretrained", "{tmp}/head_only.pth"],
     ["head_only.pth", "encoder"]),
    ("pretrained_needs_pickle", "train", pickled_object,
     ["train", *XTL_PLAN, "-tr", "TLTrainer", "--pretrained", "{tmp}/pickled.pth"],
     ["pickled Python objects", "NotAWeight", "pickled.pth", "re-save it"]),
    # predict
    ("predict_wrong_channel_count", "predict", predict_extra_channel, PREDICT,
     ["brainms_0006_0002.nii.gz", "the model takes 2 channels", "give exactly the channels"]),
    ("predict_missing_channel", "predict", predict_one_channel, PREDICT,
     ["brainms_0006_0001.nii.gz", "lacks channel file", "give all 2 channels"]),
    ("predict_missing_fold", "predict", one_case, [*PREDICT, "-f", "3"],
     ["fold 3 has no checkpoint_final.pth", "fold_3", "choose folds with -f"]),
    ("predict_empty_input", "predict", predict_empty, PREDICT,
     ["no images named CASE_0000.nii.gz", "/in", "name the files as in imagesTs"]),
    ("predict_output_is_file", "predict", output_is_file, PREDICT,
     ["output path is a file", "/out", "give a folder for -o"]),
    ("predict_output_parent_is_file", "predict", output_parent_is_file,
     [*PREDICT[:3], "-o", "{tmp}/afile/out", *PREDICT[5:]],
     ["cannot create the output folder", "afile/out", "writable folder"]),
    ("predict_output_read_only", "predict", output_read_only, PREDICT,
     ["not writable", "/out", "writable folder"]),
]


@pytest.fixture(scope="module")
def brain_model_results(prepared_roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results root with a one-fold (fold 0) ScratchTrainer brain model, trained once for this module."""
    results = tmp_path_factory.mktemp("bad_inputs_results")
    with pytest.MonkeyPatch.context() as mp:
        set_roots(mp, prepared_roots["raw"], prepared_roots["preprocessed"], results)
        assert main(["-q", "train", "501", "3d_fullres", "0", *TRAIN]) == 0
    return results


def make_env(kind: str, request: pytest.FixtureRequest, tmp_path: Path, mp: pytest.MonkeyPatch) -> Env:
    """The roots of one entry, set in the environment."""
    work = tmp_path / "work"
    work.mkdir()
    if kind == "raw":
        raw, pre, res = (tmp_path / k for k in ("raw", "preprocessed", "results"))
        for p in (raw, pre, res):
            p.mkdir()
        env = Env(work, raw, pre, res, mp, cache=request.getfixturevalue("example_cache"))
    elif kind == "train":
        prep = request.getfixturevalue("prepared_roots")
        pre, res = tmp_path / "preprocessed", tmp_path / "results"
        pre.mkdir()
        env = Env(work, prep["raw"], pre, res, mp, cache=prep["preprocessed"])
    else:
        prep = request.getfixturevalue("prepared_roots")
        res = request.getfixturevalue("brain_model_results")
        env = Env(work, prep["raw"], prep["preprocessed"], res, mp, watch=[prep["preprocessed"], res])
    set_roots(mp, env.raw, env.pre, env.res)
    return env


@pytest.mark.parametrize("kind, setup, argv, needles", [pytest.param(*row[1:], id=row[0]) for row in CATALOGUE])
def test_bad_input(kind: str, setup: Callable[[Env], None], argv: list[str], needles: list[str],
                   request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture) -> None:
    env = make_env(kind, request, tmp_path, monkeypatch)
    setup(env)
    watched = [tmp_path, *env.watch]
    before = snapshot(watched)
    capsys.readouterr()
    code = main(env.fmt(argv))
    out = capsys.readouterr()
    err = out.err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    assert lines[0].startswith(f"xtlunet {argv[0]}: error: ") and "fix:" in lines[0], lines[0]
    problem_list = [line for line in err.splitlines() if line.startswith("  ")]
    named = "\n".join([lines[0], *problem_list])
    for needle in env.fmt(needles):
        assert needle in named, f"{needle!r} not in:\n{named}"
    after = snapshot(watched)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    assert not partial_files(watched)


def test_catalogue_is_large_and_distinct() -> None:
    ids = [row[0] for row in CATALOGUE]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert len({(row[2], tuple(row[3])) for row in CATALOGUE}) == len(CATALOGUE)
