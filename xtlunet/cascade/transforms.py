"""batchgenerators transforms of the previous-stage channels of a cascade batch (nnU-Net's, in numpy/scipy).

Run after the spatial and intensity transforms, on batches whose seg holds the label in channel 0 and the
previous stage's prediction in channel 1: that channel moves into one-hot data channels, then, so the network
learns not to copy the previous stage blindly, a random binary operator (dilation, erosion, closing or opening
with a ball of radius 1–8 voxels) and the removal of a random small connected component perturb them.
"""
from __future__ import annotations

import abc
from typing import Callable, Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform
from scipy import ndimage

from xtlunet.cascade.onehot import previous_stage_to_data


def _distance_inside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (voxels) of every voxel of mask to the nearest voxel outside it (inf when none is)."""
    if mask.all():
        return np.full(mask.shape, np.inf)
    return ndimage.distance_transform_edt(mask)


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by a ball of `radius` voxels."""
    return _distance_inside(~mask) <= radius


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary erosion by a ball of `radius` voxels (the array's edge does not erode, as nnU-Net's)."""
    return _distance_inside(mask) > radius


def close(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation, then erosion."""
    return erode(dilate(mask, radius), radius)


def open_(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erosion, then dilation."""
    return dilate(erode(mask, radius), radius)


OPERATORS: tuple[Callable[[np.ndarray, float], np.ndarray], ...] = (dilate, erode, close, open_)


class PreviousStageToData(AbstractTransform):
    """seg channel 1 → one-hot data channels after the images' (one per foreground label); seg keeps channel 0."""

    def __init__(self, labels: Sequence[int]) -> None:
        self.labels = list(labels)

    def __call__(self, **batch):
        """Move the previous stage's labels into the data."""
        return previous_stage_to_data(batch, self.labels)


class _PerLabelTransform(AbstractTransform, abc.ABC):
    """Applied to a sample with probability p_per_sample, then to each of the last `n_labels` data channels (in
    random order) with probability p_per_label."""

    def __init__(self, n_labels: int, p_per_sample: float, p_per_label: float) -> None:
        self.n_labels, self.p_per_sample, self.p_per_label = n_labels, p_per_sample, p_per_label

    def __call__(self, **batch):
        """Perturb the chosen channels of the chosen samples in place."""
        data = batch["data"]
        channels = list(range(data.shape[1] - self.n_labels, data.shape[1]))
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            for c in np.random.permutation(channels):
                if np.random.uniform() < self.p_per_label:
                    self.apply(data[b], int(c), channels)
        return batch

    @abc.abstractmethod
    def apply(self, sample: np.ndarray, channel: int, channels: list[int]) -> None:
        """Change one one-hot channel of one sample (C, *spatial) in place (each perturbation's own)."""


class RandomBinaryOperator(_PerLabelTransform):
    """Dilate, erode, close or open a one-hot channel with a ball of random radius; voxels it adds leave the other
    one-hot channels (nnU-Net's ApplyRandomBinaryOperatorTransform)."""

    def __init__(self, n_labels: int, radius: tuple[float, float] = (1.0, 8.0), p_per_sample: float = 0.4,
                 p_per_label: float = 0.5) -> None:
        super().__init__(n_labels, p_per_sample, p_per_label)
        self.radius = radius

    def apply(self, sample: np.ndarray, channel: int, channels: list[int]) -> None:
        """One random operator on one channel."""
        mask = sample[channel] > 0
        operator = OPERATORS[np.random.randint(len(OPERATORS))]
        result = operator(mask, np.random.uniform(*self.radius))
        added = result & ~mask
        for other in channels:
            if other != channel:
                sample[other][added] = 0
        sample[channel] = result


class RemoveRandomComponent(_PerLabelTransform):
    """Delete one random connected component (smaller than `max_fraction` of the patch) of a one-hot channel
    (nnU-Net's RemoveRandomConnectedComponentFromOneHotEncodingTransform, never filled with another class)."""

    def __init__(self, n_labels: int, max_fraction: float = 0.15, p_per_sample: float = 0.2,
                 p_per_label: float = 0.5) -> None:
        super().__init__(n_labels, p_per_sample, p_per_label)
        self.max_fraction = max_fraction

    def apply(self, sample: np.ndarray, channel: int, channels: list[int]) -> None:
        """Remove one component of one channel."""
        mask = sample[channel] > 0
        if not mask.any():
            return
        components, _ = ndimage.label(mask, ndimage.generate_binary_structure(mask.ndim, mask.ndim))
        sizes = np.bincount(components.ravel())[1:]
        small = np.flatnonzero(sizes < self.max_fraction * mask.size) + 1
        if len(small):
            sample[channel][components == np.random.choice(small)] = 0


def previous_stage_transforms(labels: Sequence[int]) -> list[AbstractTransform]:
    """The cascade's last transforms: one-hot, then nnU-Net's two perturbations."""
    n = len(labels)
    return [PreviousStageToData(labels), RandomBinaryOperator(n), RemoveRandomComponent(n)]
