"""The 2D (mammogram) pretraining stage: data preparation for `xtlunet pretrain-2d`."""
