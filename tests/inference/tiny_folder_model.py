"""A tiny untrained one-fold 3D model and an input folder of small oblique cases, for prediction-loop tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.inference.models import TrainedModel

from conftest import LABELS

CASES = ["c0", "c1", "c2"]


def tiny_folder_model(tmp_path: Path, make_plans: Callable[..., Any],
                      make_net: Callable[..., Any]) -> tuple[TrainedModel, Path]:
    """The model (1 channel, 3 classes, patch 8×16×16, no mirroring) and a folder of CASES, each of another size."""
    plans = make_plans([2, 0, 1], [3.0, 1.1, 0.9], [8, 16, 16])
    spec = DatasetSpec(root=tmp_path / "Dataset999_Inference", channel_names={0: "ch0"}, labels=dict(LABELS),
                       num_training=0, file_ending=".nii.gz")
    model = TrainedModel(tmp_path, plans, plans.configurations["3d_fullres"], spec, [make_net(3, in_channels=1)],
                         ["0"], [])
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k, case in enumerate(CASES):
        shape = (30 + 2 * k, 36, 10)
        image = rng.normal(1.0, 0.5, shape).astype(np.float32)
        image[:3] = 0.0    # a border for the crop
        geo = Geometry((0.8, 0.6, 3.0), (10.0, -5.0, 2.0), (1.0, 0, 0, 0, 0.96, -0.28, 0, 0.28, 0.96), shape)
        write_image(src / f"{case}_0000.nii.gz", image, geo)
    return model, src


def folder_bytes(out: Path) -> dict[str, bytes]:
    """Every file of a prediction folder (no lock or temp files), by name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if not p.name.startswith(".")}
