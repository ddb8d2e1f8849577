"""Sliding-window prediction: equals a whole-image forward when patch = image; shapes, padding, 2D slice mode."""
import pytest
import torch

from xtlunet.errors import XtlunetError
from xtlunet.inference import predict_sliding_window
from xtlunet.inference.mirroring import forward_logits, inference_state


class Shifted(torch.nn.Module):
    """A network whose outputs are another's plus a constant (deep supervision passed through)."""

    def __init__(self, net: torch.nn.Module, offset: float) -> None:
        super().__init__()
        self.net, self.offset = net, offset

    @property
    def deep_supervision(self):
        """The wrapped network's flag (inference_state switches it off)."""
        return self.net.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, value) -> None:
        self.net.deep_supervision = value

    def forward(self, x: torch.Tensor):
        """The wrapped outputs plus the offset."""
        out = self.net(x)
        return [o + self.offset for o in out] if isinstance(out, (list, tuple)) else out + self.offset


def whole_forward(net, x: torch.Tensor) -> torch.Tensor:
    """The logits of one forward pass of the whole image (C, *spatial)."""
    with inference_state(net), torch.no_grad():
        return forward_logits(net, x[None])[0]


@pytest.mark.parametrize("dim, shape", [(2, (16, 24)), (3, (8, 12, 16))])
def test_patch_equal_to_image_is_a_plain_forward(make_net, dim, shape):
    net = make_net(dim)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    logits = predict_sliding_window(net, x, shape, 3)
    assert logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert torch.allclose(logits, whole_forward(net, x), atol=1e-5)   # one window: its logits, whatever the weights


@pytest.mark.parametrize("dim, shape, patch", [
    (2, (37, 22), (16, 16)),          # larger than the patch, not a multiple
    (3, (13, 21, 18), (8, 12, 8)),    # several windows along every axis
    (3, (5, 30, 6), (8, 8, 8)),       # smaller than the patch along two axes: padded and cropped back
])
def test_shapes_finite_and_a_weighted_mean(make_net, dim, shape, patch):
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(2))
    net = make_net(dim)
    for gaussian in (True, False):
        logits = predict_sliding_window(net, x, patch, 3, batch_windows=3, use_gaussian=gaussian)
        assert tuple(logits.shape) == (3, *shape) and bool(torch.isfinite(logits).all())
        # a weighted mean of window logits: the mean of a constant offset added to every output is that offset
        shifted = predict_sliding_window(Shifted(net, 2.5), x, patch, 3, batch_windows=3, use_gaussian=gaussian)
        assert torch.allclose(shifted - logits, torch.full_like(logits, 2.5), atol=1e-4)


def test_batching_and_step_do_not_change_a_single_window(make_net):
    net, x = make_net(3), torch.randn(2, 12, 20, 20, generator=torch.Generator().manual_seed(3))
    one = predict_sliding_window(net, x, (8, 12, 12), 3, batch_windows=1)
    many = predict_sliding_window(net, x, (8, 12, 12), 3, batch_windows=7)
    assert torch.allclose(one, many, atol=1e-5)
    coarse = predict_sliding_window(net, x, (8, 12, 12), 3, step=1.0)
    assert tuple(coarse.shape) == tuple(one.shape) and not torch.allclose(coarse, one, atol=1e-3)


def test_2d_net_on_a_volume_predicts_slice_by_slice(make_net):
    net = make_net(2)
    x = torch.randn(2, 5, 16, 20, generator=torch.Generator().manual_seed(4))
    logits = predict_sliding_window(net, x, (16, 20), 3, batch_windows=2)
    assert tuple(logits.shape) == (3, 5, 16, 20)
    expected = torch.stack([whole_forward(net, x[:, z]) for z in range(5)], dim=1)
    assert torch.allclose(logits, expected, atol=1e-5)
    windows = predict_sliding_window(net, x, (8, 12), 3, mirror_axes=(0, 1))
    assert tuple(windows.shape) == (3, 5, 16, 20) and bool(torch.isfinite(windows).all())


def test_network_state_is_restored(make_net):
    net = make_net(3)
    net.train()
    out = predict_sliding_window(net, torch.randn(2, 8, 8, 8), (8, 8, 8), 3)
    assert net.training and net.deep_supervision is None and tuple(out.shape) == (3, 8, 8, 8)
    assert isinstance(net(torch.randn(1, 2, 8, 8, 8)), list)  # deep supervision back on in training mode


def test_progress_bar(make_net, capsys):
    predict_sliding_window(make_net(2), torch.randn(2, 24, 24), (16, 16), 3, batch_windows=1, progress=True)
    assert "sliding window" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, needle", [
    ({"patch_size": (8,)}, "cannot slide"),
    ({"num_outputs": 4}, "expected 4 classes"),
    ({"mirror_axes": (3,)}, "mirror axes"),
    ({"batch_windows": 0}, "batch_windows"),
])
def test_clear_errors(make_net, kwargs, needle):
    args = {"patch_size": (8, 8, 8), "num_outputs": 3, **kwargs}
    with pytest.raises(XtlunetError, match=needle):
        predict_sliding_window(make_net(3), torch.randn(2, 8, 8, 8), **args)
