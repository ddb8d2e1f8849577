"""The nnU-Net cascade: `3d_lowres`, then `3d_cascade_fullres` fed with its prediction.

- plans: `3d_cascade_fullres` is `3d_fullres` (spacing, patch, network, preprocessed arrays) whose
  network reads one more input channel per foreground label (`previous_stage: "3d_lowres"`);
- `next_stage`: a `3d_lowres` fold's final validation writes each held-out case's prediction on
  the `3d_fullres` grid to `MODEL/predicted_next_stage/3d_cascade_fullres/CASE.npz` (uint8 `seg`);
- `previous`: a cascade fold reads those cross-validation predictions (each case predicted by the
  lowres fold that held it out) as a second label channel, cut and augmented with the image;
- `transforms`: that channel becomes one-hot input channels, perturbed as nnU-Net does;
- `chain`: prediction runs the lowres model's fold ensemble first, then the cascade.

Submodules are imported where used (training imports only `onehot` and `transforms`).
"""
from pathlib import Path

PREDICTED_NEXT_STAGE = "predicted_next_stage"   # folder of a lowres model holding its predictions for a next stage
RECORD = "previous_stage.json"   # in a cascade model folder: the lowres model its folds were trained after


def next_stage_folder(model_dir: Path, stage: str) -> Path:
    """MODEL/predicted_next_stage/STAGE: the predictions a lowres model wrote for the stage after it."""
    return model_dir / PREDICTED_NEXT_STAGE / stage
