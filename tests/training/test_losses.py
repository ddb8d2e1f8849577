"""Segmentation and classification losses on tiny tensors with hand-computed answers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xtlunet.training.losses import (DeepSupervisionLoss, DiceCELoss, classification_loss, downsample_targets,
                                     soft_dice_loss)

MARGIN = 50.0  # logit gap that makes softmax one-hot to ~1e-22


def _onehot_logits(target: torch.Tensor, num_classes: int, margin: float = MARGIN) -> torch.Tensor:
    """Logits (B, C, ...) that put all probability on the class given by target (B, ...)."""
    return F.one_hot(target.clamp_min(0).long(), num_classes).movedim(-1, 1).float() * margin


def _logits_from_probs(p1: list[float]) -> torch.Tensor:
    """Two-class logits (1, 2, 1, N) whose softmax is exactly (1 - p1, p1) per voxel."""
    p1 = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.log(1 - p1), torch.log(p1)])[None, :, None, :]


def _target(dim: int, seed: int = 0, num_classes: int = 3) -> torch.Tensor:
    """A random (2, 6, 6[, 6]) label map in which every class occurs."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, num_classes, (2,) + (6,) * dim, generator=g)
    t.view(-1)[:num_classes] = torch.arange(num_classes)
    return t


@pytest.mark.parametrize("dim", [2, 3])
def test_perfect_prediction_gives_zero_dice_and_dice_ce(dim):
    target = _target(dim)
    logits = _onehot_logits(target, 3)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceCELoss()(logits, target).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dim", [2, 3])
def test_fully_wrong_prediction_gives_dice_loss_one(dim):
    target = _target(dim, num_classes=2)
    logits = _onehot_logits(1 - target, 2)     # every voxel predicted as the other class
    assert soft_dice_loss(logits, target).item() == pytest.approx(1.0, abs=1e-6)
    # CE of a confidently wrong voxel is the margin itself
    assert DiceCELoss()(logits, target).item() == pytest.approx(MARGIN + 1.0, rel=1e-5)


def test_soft_dice_matches_hand_computation():
    logits = _logits_from_probs([0.9, 0.2, 0.6, 0.1])
    target = torch.tensor([[[1, 0, 1, 0]]])
    # foreground class only: intersection 0.9 + 0.6, prediction mass 1.8, reference mass 2
    dice = (2 * 1.5 + 1e-5) / (1.8 + 2 + 1e-5)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - dice, abs=1e-5)
    # and the cross-entropy part is the mean of -log p(true class)
    ce = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.9)) / 4
    assert DiceCELoss()(logits, target).item() == pytest.approx(ce + 1 - dice, abs=1e-5)


def test_soft_dice_averages_foreground_classes_only():
    # 3 classes on 4 voxels; class 0 (background) is predicted badly, which must not matter
    p = torch.tensor([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    logits = torch.log(p.clamp_min(1e-300)).T[None, :, None, :]
    target = torch.tensor([[[0, 1, 2, 2]]])
    d1 = (2 * 1.0 + 1e-5) / (1.5 + 1 + 1e-5)
    d2 = (2 * 2.0 + 1e-5) / (2.5 + 2 + 1e-5)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - (d1 + d2) / 2, abs=1e-5)


@pytest.mark.parametrize("dim", [2, 3])
def test_ignored_voxels_do_not_change_the_loss(dim):
    target = _target(dim, seed=1)
    target[:, 0] = -1                                  # first row/plane of every sample is outside the image
    logits = torch.randn((2, 3) + (6,) * dim, generator=torch.Generator().manual_seed(1))
    other = logits.clone()
    other[:, :, 0] = torch.randn_like(other[:, :, 0]) * 10
    assert not torch.equal(logits, other)
    loss = DiceCELoss()
    assert loss(other, target).item() == pytest.approx(loss(logits, target).item(), abs=1e-6)
    assert soft_dice_loss(other, target).item() == pytest.approx(soft_dice_loss(logits, target).item(), abs=1e-6)
    # the same as leaving the ignored voxels out altogether
    assert loss(logits, target).item() == pytest.approx(loss(logits[:, :, 1:], target[:, 1:]).item(), abs=1e-6)
    assert soft_dice_loss(logits, target).item() == pytest.approx(
        soft_dice_loss(logits[:, :, 1:], target[:, 1:]).item(), abs=1e-6)


def test_ignored_voxels_count_for_nothing_even_when_predicted_foreground():
    # two voxels: one foreground predicted right, one ignored but predicted as foreground
    logits = _onehot_logits(torch.tensor([[[1, 1]]]), 2)
    target = torch.tensor([[[1, -1]]])
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceCELoss()(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_is_computed_over_the_whole_batch():
    # sample 0: 4 foreground voxels, all found; sample 1: 1 foreground voxel, missed
    target = torch.tensor([[[1, 1, 1, 1, 0]], [[1, 0, 0, 0, 0]]])
    pred = torch.tensor([[[1, 1, 1, 1, 0]], [[0, 0, 0, 0, 0]]])
    logits = _onehot_logits(pred, 2)
    batch_dice = 2 * 4 / (4 + 5)                       # intersection 4, prediction 4, reference 5
    per_sample_mean = (1.0 + 0.0) / 2
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - batch_dice, abs=1e-5)
    assert abs((1 - batch_dice) - (1 - per_sample_mean)) > 0.3     # the two really differ here
    # per sample the loss would be 0 and ~1
    assert soft_dice_loss(logits[:1], target[:1]).item() == pytest.approx(0.0, abs=1e-5)
    assert soft_dice_loss(logits[1:], target[1:]).item() == pytest.approx(1.0, abs=1e-4)  # smooth / (1 + smooth)
    # per-sample Dice (the plan's batch_dice False) averages those two
    assert soft_dice_loss(logits, target, batch_dice=False).item() == pytest.approx(1 - per_sample_mean, abs=1e-4)
    assert DiceCELoss(batch_dice=False)(logits, target).item() == pytest.approx(
        DiceCELoss()(logits, target).item() - (1 - batch_dice) + (1 - per_sample_mean), abs=1e-4)


def test_deep_supervision_weights_halve_the_coarsest_is_zero_and_they_sum_to_one():
    ds = DeepSupervisionLoss(DiceCELoss(), 3)
    assert torch.allclose(ds.weights, torch.tensor([2 / 3, 1 / 3, 0.0]), atol=1e-7)   # nnU-Net: 1, 1/2, 0
    assert torch.allclose(DeepSupervisionLoss(DiceCELoss(), 4).weights, torch.tensor([4 / 7, 2 / 7, 1 / 7, 0.0]))
    assert ds.weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert "weights" not in ds.state_dict()            # a non-persistent buffer
    assert torch.allclose(DeepSupervisionLoss(DiceCELoss(), 1).weights, torch.tensor([1.0]))


@pytest.mark.parametrize("dim", [2, 3])
def test_deep_supervision_total_is_the_weighted_sum(dim):
    scales = [[1] * dim, [2] * dim, [4] * dim]
    g = torch.Generator().manual_seed(2)
    seg = torch.randint(0, 3, (2,) + (8,) * dim, generator=g)
    targets = downsample_targets(seg, scales)
    outputs = [torch.randn((2, 3) + t.shape[1:], generator=g) for t in targets]
    base = DiceCELoss()
    per_scale = [base(o, t).item() for o, t in zip(outputs, targets)]
    expected = (2 * per_scale[0] + 1 * per_scale[1] + 0 * per_scale[2]) / 3
    assert DeepSupervisionLoss(base, 3)(outputs, targets).item() == pytest.approx(expected, rel=1e-6)
    assert len(set(round(v, 6) for v in per_scale)) == 3   # distinct terms, so the weights are really tested


def test_deep_supervision_with_a_single_tensor_uses_the_first_target():
    g = torch.Generator().manual_seed(3)
    seg = torch.randint(0, 2, (2, 8, 8, 8), generator=g)
    out = torch.randn((2, 2, 8, 8, 8), generator=g)
    garbage = torch.full((5, 1, 1), 7)                 # would fail if it were used
    ds = DeepSupervisionLoss(DiceCELoss(), 3)
    assert ds(out, [seg, garbage]).item() == pytest.approx(DiceCELoss()(out, seg).item(), rel=1e-6)


def test_downsample_targets_3d_take_the_centre_of_each_block():
    seg = torch.arange(2 * 4 * 8 * 8).reshape(2, 4, 8, 8)
    full, half, quarter = downsample_targets(seg, [[1, 1, 1], [1, 2, 2], [2, 4, 4]])
    assert full is seg
    assert half.shape == (2, 4, 4, 4) and quarter.shape == (2, 2, 2, 2)
    s = seg.numpy()
    for b in range(2):
        for z in range(4):
            for y in range(4):
                for x in range(4):
                    assert half[b, z, y, x].item() == s[b, z, 2 * y + 1, 2 * x + 1]
        for z in range(2):
            for y in range(2):
                for x in range(2):
                    assert quarter[b, z, y, x].item() == s[b, 2 * z + 1, 4 * y + 2, 4 * x + 2]
    assert quarter[1, 1, 1, 1].item() == 1 * 256 + 3 * 64 + 6 * 8 + 6


@pytest.mark.parametrize("shape, scale", [((4, 8, 8), (1, 2, 2)), ((4, 8, 8), (2, 4, 4)), ((16, 12), (4, 2))])
def test_downsample_targets_equal_nnunets_nearest_exact_interpolation(shape, scale):
    g = torch.Generator().manual_seed(7)
    seg = torch.randint(0, 4, (2, *shape), generator=g)
    ours = downsample_targets(seg, [scale])[0]
    size = [n // v for n, v in zip(shape, scale)]
    theirs = F.interpolate(seg[:, None].float(), size, mode="nearest-exact")[:, 0].long()
    assert torch.equal(ours, theirs)


def test_downsample_targets_2d_and_odd_sizes():
    seg = torch.arange(1 * 5 * 7).reshape(1, 5, 7)
    full, half = downsample_targets(seg, [[1, 1], [2, 2]])
    assert full is seg
    assert half.shape == (1, 3, 4)                     # ceil(5/2), ceil(7/2): the last block's centre is clamped
    assert half[0].tolist() == [[8, 10, 12, 13], [22, 24, 26, 27], [29, 31, 33, 34]]


@pytest.mark.parametrize("dim", [2, 3])
def test_gradients_flow_through_dice_ce(dim):
    target = _target(dim, seed=4)
    target[0, 0] = -1
    logits = torch.randn((2, 3) + (6,) * dim, generator=torch.Generator().manual_seed(4)).requires_grad_()
    DiceCELoss()(logits, target).backward()
    grad = logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[1].abs().sum() > 0
    assert torch.count_nonzero(grad[0, :, 0]) == 0     # ignored voxels get no gradient


def test_gradients_flow_through_deep_supervision():
    seg = _target(3, seed=5)
    targets = downsample_targets(seg, [[1, 1, 1], [2, 2, 2], [4, 4, 4]])
    outs = [torch.randn((2, 3) + t.shape[1:]).requires_grad_() for t in targets]
    DeepSupervisionLoss(DiceCELoss(), 3)(outs, targets).backward()
    for o in outs[:2]:
        assert torch.isfinite(o.grad).all() and o.grad.abs().sum() > 0
    assert torch.equal(outs[2].grad, torch.zeros_like(outs[2]))   # the coarsest output has weight 0


def test_classification_loss_plain_and_with_label_smoothing():
    logits = torch.tensor([[2.0, 0.5], [0.1, 1.5], [-1.0, 3.0]], dtype=torch.float64)
    target = torch.tensor([0, 1, 0])
    logp = np.log(np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True))
    nll = -np.mean([logp[i, t] for i, t in enumerate(target.tolist())])
    assert classification_loss()(logits, target).item() == pytest.approx(nll, rel=1e-12)
    # torch's label smoothing: target distribution (1 - eps) one-hot + eps / K uniform
    eps, k = 0.2, 2
    smoothed = np.mean([-(1 - eps) * logp[i, t] - eps / k * logp[i].sum() for i, t in enumerate(target.tolist())])
    got = classification_loss(label_smoothing=eps)(logits, target).item()
    assert got == pytest.approx(smoothed, rel=1e-12)
    assert abs(got - nll) > 1e-3
    logits.requires_grad_()
    classification_loss(0.1)(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
