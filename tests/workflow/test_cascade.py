"""The 3d_lowres → 3d_cascade_fullres cascade: its plan, the lowres folds' exports, the refusal without them, the
one-hot input channels and their perturbations, a cascade fold trained and a folder predicted through both stages."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xtlunet.cascade.onehot import StackedInput, one_hot, previous_stage_to_data
from xtlunet.cascade.transforms import OPERATORS, RandomBinaryOperator, RemoveRandomComponent, erode
from xtlunet.cli import main
from xtlunet.dataset.io import read_image
from xtlunet.launch import train_fold
from xtlunet.networks.build import build_network
from xtlunet.plans import Plans
from xtlunet.trainers.arms import ScratchTrainer
from xtlunet.training.augmentation import AugmentationConfig, build_augmentation
from xtlunet.training.run_spec import RunSpec
from xtlunet.transfer import transfer_weights

DATASET = "Dataset501_BrainMS"
LOWRES_GB = "0.02"        # the brain-ms example then needs a 3d_lowres (its 3d_fullres patch covers < 25 %)
SPLIT = [{"train": ["brainms_0001", "brainms_0002"], "val": ["brainms_0003"]},
         {"train": ["brainms_0003"], "val": ["brainms_0001", "brainms_0002"]}]   # cases 4 and 5 sit out
FAST = dict(epochs=1, iters_per_epoch=1, val_iters=1, device="cpu", validation_tta=False, step_size=1.0)


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory, example_cache: Path) -> dict[str, Path]:
    """Raw + preprocessed roots with brain-ms planned with 3d_lowres (so the cascade) and a two-fold split."""
    base = tmp_path_factory.mktemp("cascade")
    roots = {k: base / k for k in ("raw", "preprocessed")}
    shutil.copytree(example_cache / DATASET, roots["raw"] / DATASET)
    with pytest.MonkeyPatch.context() as mp:
        for kind, path in roots.items():
            mp.setenv(f"XTLUNET_{kind}", str(path))
        assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "3d_lowres",
                     "--gpu-memory-gb", LOWRES_GB]) == 0
    (roots["preprocessed"] / DATASET / "splits_final.json").write_text(json.dumps(SPLIT))
    return roots


@pytest.fixture
def roots(planned: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The planned roots and a fresh results root; augmentation in this process."""
    out = dict(planned, results=tmp_path / "results")
    for kind, path in out.items():
        monkeypatch.setenv(f"XTLUNET_{kind}", str(path))
    monkeypatch.setenv("XTLUNET_n_proc_DA", "0")
    return out


def _plans(roots: dict[str, Path], name: str = "xtlunetPlans") -> Plans:
    """The dataset's plans of that name."""
    return Plans.load(roots["preprocessed"] / DATASET / f"{name}.json")


def _model(roots: dict[str, Path], config: str, trainer: str = "ScratchTrainer") -> Path:
    """results/DATASET/TRAINER__xtlunetPlans__CONFIG."""
    return roots["results"] / DATASET / f"{trainer}__xtlunetPlans__{config}"


def test_the_cascade_is_planned_exactly_with_3d_lowres(roots):
    plans = _plans(roots)
    full, low, cascade = (plans.configuration(c) for c in ("3d_fullres", "3d_lowres", "3d_cascade_fullres"))
    assert (low.next_stage, cascade.previous_stage, full.previous_stage) == ("3d_cascade_fullres", "3d_lowres", None)
    assert cascade.data_identifier == full.data_identifier and cascade.spacing == full.spacing
    assert cascade.patch_size == full.patch_size and cascade.batch_size == full.batch_size
    # 2 image channels (FLAIR, T1) + 1 foreground label; otherwise 3d_fullres's network
    assert cascade.network().in_channels == 3 == plans.input_channels(cascade) and full.network().in_channels == 2
    assert {k: v for k, v in cascade.architecture.items() if k != "in_channels"} == \
        {k: v for k, v in full.architecture.items() if k != "in_channels"}
    assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "3d_lowres", "--gpu-memory-gb",
                 "0.04", "--no-pp", "--plans-name", "NoLowres"]) == 0      # a larger patch: no 3d_lowres needed
    assert list(_plans(roots, "NoLowres").configurations) == ["3d_fullres"]
    assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_cascade_fullres", "--gpu-memory-gb", LOWRES_GB,
                 "--no-pp", "--plans-name", "CascadeOnly"]) == 0          # asking for the cascade plans its lowres
    assert list(_plans(roots, "CascadeOnly").configurations) == ["3d_lowres", "3d_cascade_fullres"]


def test_plans_without_cascade_keys_load_and_keep_their_identity(roots):
    doc = json.loads((roots["preprocessed"] / DATASET / "xtlunetPlans.json").read_text())
    del doc["configurations"]["3d_cascade_fullres"]
    del doc["configurations"]["3d_lowres"]["next_stage"]       # as plans made before the cascade existed
    old = Plans.from_json(doc)
    assert old.configuration("3d_lowres").next_stage is None and old.to_json() == doc
    assert "next_stage" not in json.dumps(old.to_json()) and "previous_stage" not in json.dumps(old.to_json())


def test_one_hot_channels_count_and_values():
    prev = np.array([[0, 1, 2], [2, -1, 1]])
    hot = one_hot(prev, [1, 2])
    assert hot.shape == (2, 2, 3) and hot.dtype == np.float32
    assert hot[0].tolist() == [[0, 1, 0], [0, 0, 1]] and hot[1].tolist() == [[0, 0, 1], [1, 0, 0]]
    data = np.random.default_rng(0).normal(size=(3, 2, 3)).astype(np.float32)
    lazy = StackedInput(data, prev, [1, 2])
    stacked = np.asarray(lazy)
    assert lazy.shape == stacked.shape == (5, 2, 3) and stacked.dtype == np.float32
    assert np.array_equal(stacked[:3], data) and np.array_equal(stacked[3:], hot)
    seg = np.stack([np.stack([np.zeros((2, 3)), prev])] * 2).astype(np.float32)   # (B, 2, ...): label, previous
    batch = previous_stage_to_data({"data": np.stack([data, data]), "seg": seg}, [1, 2])
    assert batch["data"].shape == (2, 5, 2, 3) and batch["seg"].shape == (2, 1, 2, 3) and not batch["seg"].any()
    assert np.array_equal(batch["data"][1, 3:], hot) and np.array_equal(batch["data"][1, :3], data)


def test_augmented_cascade_batch_has_one_hot_channels_after_the_images():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 2, 8, 20, 20)).astype(np.float32)
    seg = np.zeros((2, 2, 8, 20, 20), np.float32)
    seg[:, 0, 2:6, 5:12, 5:12] = 1
    seg[:, 1, 2:6, 6:13, 5:12] = 2          # the previous stage: label 2, shifted
    seg[:, 1, 2:6, 1:3, 1:3] = 1
    cfg = AugmentationConfig(previous_stage_labels=(1, 2))
    np.random.seed(0)
    out = build_augmentation([8, 16, 16], cfg)(data=data.copy(), seg=seg.copy())
    assert out["data"].shape == (2, 4, 8, 16, 16) and out["seg"].shape == (2, 1, 8, 16, 16)
    hot = out["data"][:, 2:]
    assert set(np.unique(hot)) <= {0.0, 1.0} and hot.sum(axis=1).max() <= 1      # one-hot: at most one label
    assert hot[:, 1].sum() > 0 and set(np.unique(out["seg"])) <= {0.0, 1.0}


def test_binary_operators_and_component_removal():
    mask = np.zeros((9, 9, 9), bool)
    mask[3:6, 3:6, 3:6] = True
    outcomes = [op(mask, 1.0) for op in OPERATORS]     # dilate, erode, close, open with a ball of radius 1
    assert [int(o.sum()) for o in outcomes] == [27 + 6 * 9, 1, 27, 7] and erode(np.ones((3, 3), bool), 5).all()
    seen = set()
    for seed in range(6):
        sample = np.zeros((3, 9, 9, 9), np.float32)
        sample[1][mask] = 1
        sample[2][3:6, 6, 3:6] = 1           # another label, right beside the cube
        np.random.seed(seed)
        RandomBinaryOperator(2, radius=(1.0, 1.0)).apply(sample, 1, [1, 2])
        result = sample[1] > 0
        matches = {k for k, o in enumerate(outcomes) if np.array_equal(result, o)}
        assert matches
        seen |= matches
        assert sample[2].sum() == (0 if result.sum() > 27 else 9)    # voxels the dilation adds leave label 2
    assert seen == {0, 1, 2, 3}                                       # every operator was drawn
    comps = np.zeros((1, 2, 10, 10, 10), np.float32)
    comps[0, 1, 0:2, 0:2, 0:2] = 1          # 8 voxels
    comps[0, 1, 6:9, 6:9, 6:9] = 1          # 27 voxels
    batch = RemoveRandomComponent(1, p_per_sample=1.0, p_per_label=1.0)(data=comps.copy())
    assert batch["data"][0, 1].sum() in (8, 27) and batch["data"][0, 0].sum() == 0


def test_cascade_refuses_without_lowres_predictions(roots, capsys):
    code = main(["train", "501", "3d_cascade_fullres", "0", "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "3d_cascade_fullres fold 0 needs the 3d_lowres cross-validation prediction" in err
    assert "3 cases lack one" in err and "3d_lowres folds 0, 1" in err
    assert f"xtlunet train {DATASET} 3d_lowres FOLD -tr ScratchTrainer -p xtlunetPlans" in err
    assert not (roots["results"] / DATASET).exists()       # nothing trained, no folder made


class TransferCascade(ScratchTrainer):
    """A trainer whose encoder comes from a 1-channel 2D network of the plan's topology (as TL/XTL's), after the
    ScratchTrainer's lowres model."""

    previous_trainer = "ScratchTrainer"

    def initialise(self, net):
        """Transfer a 2D net's encoder: its first conv goes from 1 channel to the cascade's 3."""
        desc = self.conf.network().with_dim(2)
        desc.in_channels = 1
        source = build_network(desc, "segmentation", self.conf.num_outputs).state_dict()
        return transfer_weights(source, net, mode="inflate")


def test_cascade_trains_after_every_lowres_fold_and_predicts_through_both(roots, tmp_path, capsys):
    plans = _plans(roots)
    full_dir = roots["preprocessed"] / DATASET / plans.configuration("3d_fullres").data_identifier
    train_fold("ScratchTrainer", RunSpec(DATASET, "3d_lowres", 0, **FAST))
    exported = _model(roots, "3d_lowres") / "predicted_next_stage" / "3d_cascade_fullres"
    assert sorted(p.name for p in exported.iterdir()) == ["brainms_0003.npz"]
    assert main(["train", "501", "3d_cascade_fullres", "0", "--device", "cpu"]) == 2   # fold 1's cases lack one
    err = capsys.readouterr().err
    assert "2 cases lack one (brainms_0001, brainms_0002)" in err and f"{DATASET} 3d_lowres 1 -tr ScratchTrainer" in err
    train_fold("ScratchTrainer", RunSpec(DATASET, "3d_lowres", 1, **FAST))
    for case in ("brainms_0001", "brainms_0002", "brainms_0003"):
        with np.load(exported / f"{case}.npz") as f:
            seg = f["seg"]
        assert seg.dtype == np.uint8 and seg.shape == np.load(full_dir / f"{case}.npy", mmap_mode="r").shape[1:]
        assert set(np.unique(seg)) <= {0, 1}
    run = RunSpec(DATASET, "3d_cascade_fullres", 0, **FAST)
    report = TransferCascade(run)._initialise(TransferCascade(run).build_network())
    first = next(r for r in report.rows if r.name == "encoder.stages.0.blocks.0.conv.weight")
    assert first.status == "channel-adapted" and first.rule.startswith("repeat-1-to-3")
    assert "input channels 0: FLAIR, 1: T1 (images); 2: 3d_lowres 'lesion' (label 1) (one-hot previous stage)" \
        in first.reason
    summary = train_fold("ScratchTrainer", run)
    cascade = _model(roots, "3d_cascade_fullres")
    assert [c["case_id"] for c in summary["cases"]] == ["brainms_0003"]
    assert json.loads((cascade / "previous_stage.json").read_text()) == \
        {"configuration": "3d_lowres", "model": "ScratchTrainer__xtlunetPlans__3d_lowres"}
    net = torch.load(cascade / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)["network"]
    assert net["encoder.stages.0.blocks.0.conv.weight"].shape[1] == 3
    inp = tmp_path / "in"
    inp.mkdir()
    test_images = roots["raw"] / DATASET / "imagesTs"
    case = sorted(test_images.glob("*_0000.nii.gz"))[0].name[: -len("_0000.nii.gz")]
    for f in test_images.glob(f"{case}_*.nii.gz"):
        shutil.copy(f, inp / f.name)
    args = ["predict", "-i", str(inp), "-d", "501", "-c", "3d_cascade_fullres", "--no-tta", "--step-size", "1",
            "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == [f"{case}.nii.gz"]
    pred, pgeo = read_image(tmp_path / "out" / f"{case}.nii.gz")
    image, igeo = read_image(inp / f"{case}_0000.nii.gz")
    assert pgeo.mismatch(igeo) == [] and pred.shape == image.shape
    assert set(np.unique(pred)) <= {0, 1}
    shutil.move(_model(roots, "3d_lowres"), tmp_path / "lowres_elsewhere")
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "predicts after its 3d_lowres model" in err
    assert "xtlunet train Dataset501_BrainMS 3d_lowres FOLD -tr ScratchTrainer -p xtlunetPlans" in err
    assert not (tmp_path / "out2").exists()
