"""The two models of benchmarks/predict.py: nnU-Net's training driver (run in nnU-Net's venv as
`predict.py --_driver nnunet-train SPEC_JSON`), both tools' barely-trained fold-0 models, and the test input."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_and_preprocess import CONFIGURATION, DATASET_ID, DATASET_NAME, NNUNET, XTLUNET, fresh, venv_python  # noqa: E402
from train_step import Setup, run_step, threads_env  # noqa: E402

HERE = Path(__file__).resolve().parent
NNUNET_TRAINER = "nnUNetTrainer"  # run for 1 epoch of --train-iters iterations (see driver_nnunet_train)
XTLUNET_TRAINER = "ScratchTrainer"


# ---------------------------------------------------------------------------------------------------------------
# nnU-Net training driver (runs in nnU-Net's venv)
# ---------------------------------------------------------------------------------------------------------------

def driver_nnunet_train(spec: dict[str, Any]) -> None:
    """nnUNetv2_train's run_training with nnUNetTrainer cut to 1 epoch of a few iterations, no final validation.

    The stock class is used (so the model folder and nnUNetv2_predict -tr find it); only its epoch and iteration
    counts are changed, by wrapping its __init__ in this process, as nnUNetTrainer_1epoch does with num_epochs.
    (nnUNetTrainer_1epoch itself cannot be used where torchvision is broken: finding it by name imports every
    trainer module, and the primus trainers import timm, hence torchvision.)
    """
    import functools

    import torch
    from nnunetv2.run.run_training import run_training
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.set_num_threads(spec["threads"])
    original_init = nnUNetTrainer.__init__

    @functools.wraps(original_init)  # nnUNetTrainer records its init arguments from the signature
    def short_init(self, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.num_epochs = 1
        self.num_iterations_per_epoch = spec["iters"]
        self.num_val_iterations_per_epoch = 1

    nnUNetTrainer.__init__ = short_init
    nnUNetTrainer.perform_actual_validation = lambda self, *a, **k: None  # like xtlunet's --no-final-validation
    run_training(str(DATASET_ID), CONFIGURATION, 0, NNUNET_TRAINER, spec["plans"], device=torch.device("cpu"))


# ---------------------------------------------------------------------------------------------------------------
# Set-up: the two models
# ---------------------------------------------------------------------------------------------------------------

def train_models(setup: Setup, iters: int, threads: int, timeout_s: float, device: str = "cpu") -> dict[str, float]:
    """Train fold 0 of both tools (xtlunet alone without nnU-Net's set-up) on the bench plans for one epoch of `iters`
    iterations, xtlunet on `device`; return seconds per tool."""
    times: dict[str, float] = {}
    if setup.with_nnunet:
        times[NNUNET] = train_nnunet(setup, iters, threads)
    cmd = [sys.executable, "-m", "xtlunet", "-q", "train", str(DATASET_ID), CONFIGURATION, "0", "-tr", XTLUNET_TRAINER,
           "-p", setup.bench_plans[XTLUNET], "--epochs", "1", "--iters-per-epoch", str(iters), "--val-iters", "1",
           "--no-final-validation", "--device", device]
    env = {**threads_env(setup.envs[XTLUNET], threads), "XTLUNET_n_proc_DA": "0"}
    times[XTLUNET] = run_step(cmd, env, "xtlunet train", setup.work)
    ck = model_folder(setup, XTLUNET) / "fold_0" / "checkpoint_final.pth"
    if not ck.is_file():
        sys.exit(f"xtlunet train wrote no {ck}")
    return times


def train_nnunet(setup: Setup, iters: int, threads: int) -> float:
    """Train nnU-Net's fold 0 for one epoch of `iters` iterations on the CPU; return its seconds."""
    env = {**threads_env(setup.envs[NNUNET], threads), "nnUNet_n_proc_DA": "0", "nnUNet_compile": "false"}
    spec = {"plans": setup.bench_plans[NNUNET], "iters": iters, "threads": threads}
    cmd = [venv_python(setup.venv), HERE / "predict.py", "--_driver", "nnunet-train", json.dumps(spec)]
    what = f"nnU-Net training ({NNUNET_TRAINER}, 1 epoch of {iters} iterations)"
    seconds = run_step(cmd, env, what, setup.work)
    ck = model_folder(setup, NNUNET) / "fold_0" / "checkpoint_final.pth"
    if not ck.is_file():
        sys.exit(f"nnU-Net training wrote no {ck}")
    return seconds


def model_folder(setup: Setup, tool: str) -> Path:
    """TRAINER__PLANS__CONFIG of a tool's bench model."""
    trainer = NNUNET_TRAINER if tool == NNUNET else XTLUNET_TRAINER
    return setup.outs[tool] / "results" / DATASET_NAME / f"{trainer}__{setup.bench_plans[tool]}__{CONFIGURATION}"


def test_input(setup: Setup, copies: int) -> tuple[Path, Path, list[str]]:
    """The imagesTs folder (or `copies` renamed copies of each of its cases), labelsTs, and the case ids."""
    src = setup.raw / DATASET_NAME / "imagesTs"
    labels = setup.raw / DATASET_NAME / "labelsTs"
    ids = sorted({f.name[: -len("_0000.nii.gz")] for f in src.glob("*_0000.nii.gz")})
    if not ids:
        sys.exit(f"no test cases in {src}")
    if copies == 1:
        return src, labels, ids
    dst, dst_labels = setup.work / "imagesTs_copies", setup.work / "labelsTs_copies"
    fresh(dst)
    fresh(dst_labels)
    out = []
    for k in range(copies):
        for case in ids:
            new = f"{case}c{k}"
            for f in src.glob(f"{case}_*.nii.gz"):
                shutil.copy(f, dst / f.name.replace(case, new, 1))
            shutil.copy(labels / f"{case}.nii.gz", dst_labels / f"{new}.nii.gz")
            out.append(new)
    return dst, dst_labels, out
