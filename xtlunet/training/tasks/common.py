"""What both tasks share: the batch pipeline (loader + batchgenerators augmentation, in background workers)."""
from __future__ import annotations

from typing import Any, Iterator

from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from xtlunet.plans import ConfigurationPlan
from xtlunet.training.augmentation import AugmentationConfig, build_augmentation
from xtlunet.training.data import extraction_size


def augmentation_config(conf: ConfigurationPlan) -> AugmentationConfig:
    """nnU-Net's defaults; rotation/scaling in-plane only when the plan is strongly anisotropic."""
    sp = conf.spacing
    aniso = conf.dim == 3 and max(sp) / min(sp) > conf.anisotropy_threshold
    return AugmentationConfig(in_plane_only=aniso)


def extract_size(conf: ConfigurationPlan, cfg: AugmentationConfig) -> list[int]:
    """Size of the region cut before augmentation crops it to the patch."""
    return extraction_size(conf.patch_size, cfg.rotation_deg, cfg.scale[0], cfg.in_plane_only)


def batch_stream(loader: SlimDataLoaderBase, conf: ConfigurationPlan, cfg: AugmentationConfig, workers: int,
                 seed: int, with_seg: bool) -> Iterator[dict[str, Any]]:
    """Augmented batches, in `workers` background processes (0: in this process)."""
    transform = build_augmentation(conf.patch_size, cfg, with_seg=with_seg)
    if workers <= 0:
        return SingleThreadedAugmenter(loader, transform)
    return MultiThreadedAugmenter(loader, transform, workers, num_cached_per_queue=2,
                                  seeds=[seed + i for i in range(workers)], pin_memory=False, timeout=60)
