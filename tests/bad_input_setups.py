"""The setups of the bad-input catalogue (tests/test_bad_inputs.py): each breaks one thing in an entry's roots
(a dataset file, a plan, a weight file, a prediction input or output) before the entry's command runs."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from tests.bad_inputs_helpers import (BRAIN, PROSTATE, Env, NotAWeight, edit_json, read_csv, rewrite_image,
                                      small_copy, with_geometry, write_csv)
# ---------------------------------------------------------------- setups: raw datasets


def brain(env: Env) -> Path:
    """Three brain cases (2 channels, segmentation)."""
    return small_copy(env.cache, BRAIN, env.raw, 3)


def prostate(env: Env) -> Path:
    """Five prostate cases (3 channels on two grids, findings.csv)."""
    return small_copy(env.cache, PROSTATE, env.raw, 5)


def tr(root: Path, name: str) -> Path:
    """A file of imagesTr."""
    return root / "imagesTr" / name


def lab(root: Path, name: str) -> Path:
    """A file of labelsTr."""
    return root / "labelsTr" / name


def no_dataset_json(env: Env) -> None:
    (brain(env) / "dataset.json").unlink()


def json_without(key: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        edit_json(brain(env) / "dataset.json", lambda d: d.pop(key))
    setup.__name__ = f"json_without_{key}"
    return setup


def json_invalid(env: Env) -> None:
    path = brain(env) / "dataset.json"
    path.write_text(path.read_text()[:-20])


def num_training_wrong(env: Env) -> None:
    edit_json(brain(env) / "dataset.json", lambda d: d.update(numTraining=7))


def missing_channel(env: Env) -> None:
    tr(brain(env), "brainms_0002_0001.nii.gz").unlink()


def extra_channel(env: Env) -> None:
    root = brain(env)
    shutil.copy(tr(root, "brainms_0002_0000.nii.gz"), tr(root, "brainms_0002_0002.nii.gz"))


def undeclared_label(env: Env) -> None:
    def change(arr, geo):
        arr = arr.copy()
        arr[tuple(n // 2 for n in arr.shape)] = 5
        return arr, geo
    rewrite_image(lab(brain(env), "brainms_0002.nii.gz"), change)


def float_label(env: Env) -> None:
    rewrite_image(lab(brain(env), "brainms_0002.nii.gz"), lambda a, g: (a.astype(np.float32) * 0.5, g))


def nan_image(env: Env) -> None:
    def change(arr, geo):
        arr = arr.astype(np.float32)
        arr[0, 0, :3] = np.nan
        arr[0, 1, 0] = np.inf
        return arr, geo
    rewrite_image(tr(brain(env), "brainms_0002_0000.nii.gz"), change)


def label_shape(env: Env) -> None:
    rewrite_image(lab(brain(env), "brainms_0002.nii.gz"),
                  lambda a, g: (a[:, :-2], with_geometry(g, shape=(a.shape[0], a.shape[1] - 2, a.shape[2]))))


def label_spacing(env: Env) -> None:
    rewrite_image(lab(brain(env), "brainms_0002.nii.gz"),
                  lambda a, g: (a, with_geometry(g, spacing=tuple(s * 1.5 for s in g.spacing))))


def channel_origin(env: Env) -> None:
    rewrite_image(tr(brain(env), "brainms_0002_0001.nii.gz"),
                  lambda a, g: (a, with_geometry(g, origin=tuple(o + 10.0 for o in g.origin))))


def label_direction(env: Env) -> None:
    rewrite_image(lab(brain(env), "brainms_0002.nii.gz"),
                  lambda a, g: (a, with_geometry(g, direction=tuple(-d for d in g.direction))))


def four_d(env: Env) -> None:
    import SimpleITK as sitk

    path = tr(brain(env), "brainms_0002_0000.nii.gz")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([arr, arr]), isVector=False), str(path))


def zero_bytes(env: Env) -> None:
    tr(brain(env), "brainms_0002_0000.nii.gz").write_bytes(b"")


def truncated(env: Env) -> None:
    path = tr(brain(env), "brainms_0002_0000.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty_images(env: Env) -> None:
    root = brain(env)
    for f in (root / "imagesTr").iterdir():
        f.unlink()
    shutil.rmtree(root / "labelsTr")
    edit_json(root / "dataset.json", lambda d: d.update(numTraining=0))


def _edit_findings(env: Env, change: Callable[[list[dict[str, str]], list[str]], list[str] | None]) -> None:
    path = prostate(env) / "findings.csv"
    rows = read_csv(path)
    columns = list(rows[0])
    columns = change(rows, columns) or columns
    write_csv(path, rows, columns)


def finding_outside(env: Env) -> None:
    def change(rows, columns):
        rows[0].update(x="500.0", y="-400.0", z="900.0")
    _edit_findings(env, change)


def findings_missing_columns(env: Env) -> None:
    _edit_findings(env, lambda rows, columns: [c for c in columns if c != "label"])


def findings_unknown_case(env: Env) -> None:
    def change(rows, columns):
        rows[-1]["case_id"] = "prostate_0999"
    _edit_findings(env, change)


def findings_two_patients(env: Env) -> None:
    def change(rows, columns):
        rows[0]["patient_id"] = "P999"
    _edit_findings(env, change)


def roots_unset(env: Env) -> None:
    brain(env)
    for var in ("XTLUNET_raw", "nnUNet_raw"):
        env.mp.delenv(var, raising=False)


# ---------------------------------------------------------------- setups: training


def prepared(env: Env, *names: str, splits: bool = True) -> None:
    """Copy planned datasets into this entry's preprocessed root (with a 5-fold split, as after any training)."""
    from xtlunet.training.splits import load_or_create_splits

    for name in names:
        shutil.copytree(env.cache / name, env.pre / name)
        if splits:
            spec = json.loads((env.pre / name / "dataset.json").read_text())
            findings = env.pre / name / spec["findings"] if "findings" in spec else None
            ids = json.loads(next((env.pre / name).glob("*/configuration.json")).read_text())["cases"]
            classes = spec.get("classes", {})
            load_or_create_splits(env.pre / name, ids, findings, classes)
        else:
            (env.pre / name / "splits_final.json").unlink(missing_ok=True)


def brain_planned(env: Env) -> None:
    prepared(env, BRAIN)


def patient_ids_differ(env: Env) -> None:
    prepared(env, PROSTATE, splits=False)
    path = env.pre / PROSTATE / "findings.csv"
    rows = read_csv(path)
    first = rows[0]["case_id"]
    second = next(r for r in rows if r["case_id"] == first and r is not rows[0])
    second["patient_id"] = "P999"
    write_csv(path, rows, list(rows[0]))


def random_bytes(env: Env) -> None:
    brain_planned(env)
    (env.tmp / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))


def vgg_weights(env: Env) -> None:
    """A torchvision-format vgg16_bn state dict (features only), as ImageNet weights would be."""
    from xtlunet.networks.build import build_network
    from xtlunet.networks.description import family_description
    from xtlunet.networks.torchvision_keys import xtlunet_to_torchvision

    brain_planned(env)
    net = build_network(family_description("vgg16_bn", 2, 3), "classification", 10)
    enc = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    torch.save(xtlunet_to_torchvision(enc, "vgg16_bn").state_dict, env.tmp / "vgg16_bn.pth")


def no_encoder_weights(env: Env) -> None:
    brain_planned(env)
    torch.save({"head.weight": torch.zeros(10, 512), "head.bias": torch.zeros(10)}, env.tmp / "head_only.pth")


def pickled_object(env: Env) -> None:
    brain_planned(env)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}, "extra": NotAWeight()},
               env.tmp / "pickled.pth")


# ---------------------------------------------------------------- setups: predict


def one_case(env: Env) -> None:
    """One brain test case (both channels) in the input folder."""
    env.inp.mkdir()
    src = env.raw / BRAIN / "imagesTs"
    for f in sorted(src.glob("*_000[01].nii.gz"))[:2]:
        shutil.copy(f, env.inp / f.name)


def predict_extra_channel(env: Env) -> None:
    one_case(env)
    first = sorted(env.inp.iterdir())[0]
    shutil.copy(first, env.inp / first.name.replace("_0000", "_0002"))


def predict_one_channel(env: Env) -> None:
    one_case(env)
    next(env.inp.glob("*_0001.nii.gz")).unlink()


def predict_empty(env: Env) -> None:
    env.inp.mkdir()


def output_is_file(env: Env) -> None:
    one_case(env)
    env.out.write_text("not a folder")


def output_parent_is_file(env: Env) -> None:
    one_case(env)
    (env.tmp / "afile").write_text("not a folder")


def output_read_only(env: Env) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits, so a 0o555 folder stays writable "
                    "(the 'output_parent_is_file' entry covers an unwritable output path)")
    one_case(env)
    env.out.mkdir()
    env.out.chmod(0o555)


def nothing(env: Env) -> None:
    """No setup beyond the entry's roots."""
