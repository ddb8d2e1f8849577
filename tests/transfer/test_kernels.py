"""2D→3D kernel conversion: copy, inflate, center and acs against 2D convolution outputs.

Tolerance 1e-5 (float32 sums of at most a few hundred products). With zero padding along depth an
inflated kernel at the first/last d//2 slices sums fewer than d copies of the slice, so those edge
slices differ from the 2D output; interior slices are tested, and with replicate padding along depth all slices.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xtlunet.errors import XtlunetError
from xtlunet.transfer import acs_kernel, acs_split, center_kernel, convert_kernel, inflate_kernel

TOL = 1e-5


def _pair(cin: int, cout: int, k: int, depth: int) -> tuple[nn.Conv2d, nn.Conv3d]:
    """A random 2D conv and a 3D conv of kernel (depth, k, k) with same-padding."""
    torch.manual_seed(0)
    c2 = nn.Conv2d(cin, cout, k, padding=k // 2)
    c3 = nn.Conv3d(cin, cout, (depth, k, k), padding=(depth // 2, k // 2, k // 2))
    return c2, c3


def _load(c2: nn.Conv2d, c3: nn.Conv3d, mode: str) -> str:
    """Convert c2's kernel into c3 with `mode`; copy the bias."""
    w, rule = convert_kernel(c2.weight.detach(), c3.weight.shape, mode)
    with torch.no_grad():
        c3.weight.copy_(w)
        c3.bias.copy_(c2.bias)
    return rule


def _constant_depth(image: torch.Tensor, depth: int) -> torch.Tensor:
    """A (B, C, depth, H, W) volume whose every slice is `image` (B, C, H, W)."""
    return image.unsqueeze(2).repeat(1, 1, depth, 1, 1)


@torch.no_grad()
def test_inflate_interior_slices_equal_2d() -> None:
    c2, c3 = _pair(2, 5, 3, 3)
    assert _load(c2, c3, "inflate") == "inflate"
    x = torch.randn(1, 2, 12, 10)
    y3, y2 = c3(_constant_depth(x, 7)), c2(x)
    for z in range(1, 6):   # interior slices: the depth window lies inside the volume
        torch.testing.assert_close(y3[:, :, z], y2, atol=TOL, rtol=0)
    assert (y3[:, :, 0] - y2).abs().max() > 1e-3   # edge slice: zero padding enters the depth sum


@torch.no_grad()
def test_inflate_with_depth_replicate_padding_equals_2d_on_all_slices() -> None:
    c2, c3 = _pair(3, 4, 3, 5)
    _load(c2, c3, "inflate")
    x = torch.randn(2, 3, 9, 9)
    v = F.pad(_constant_depth(x, 6), (0, 0, 0, 0, 2, 2), mode="replicate")   # replicate along depth only
    y3, y2 = F.conv3d(v, c3.weight, c3.bias, padding=(0, 1, 1)), c2(x)
    for z in range(6):
        torch.testing.assert_close(y3[:, :, z], y2, atol=TOL, rtol=0)


@torch.no_grad()
def test_center_equals_2d_on_every_slice_even_with_zero_padding() -> None:
    c2, c3 = _pair(2, 3, 3, 3)
    assert _load(c2, c3, "center") == "center"
    x = torch.randn(1, 2, 8, 8)
    y3, y2 = c3(_constant_depth(x, 5)), c2(x)
    for z in range(5):
        torch.testing.assert_close(y3[:, :, z], y2, atol=TOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["inflate", "center", "acs"])
def test_depth_one_is_an_exact_copy_whatever_the_mode(mode: str) -> None:
    c2, c3 = _pair(2, 3, 3, 1)
    assert _load(c2, c3, mode) == "copy"
    assert torch.equal(c3.weight[:, :, 0], c2.weight)
    x = torch.randn(1, 2, 4, 8, 8)   # slices differ: a depth-1 kernel sees each on its own
    y3 = c3(x)
    for z in range(4):
        torch.testing.assert_close(y3[:, :, z], c2(x[:, :, z]), atol=TOL, rtol=0)


def test_kernel_shapes_and_scaling() -> None:
    w = torch.randn(4, 2, 3, 3)
    assert inflate_kernel(w, 5).shape == (4, 2, 5, 3, 3)
    torch.testing.assert_close(inflate_kernel(w, 5).sum(dim=2), w)      # depth sum gives the 2D kernel back
    c = center_kernel(w, 5)
    assert torch.equal(c[:, :, 2], w) and c[:, :, [0, 1, 3, 4]].abs().sum() == 0
    assert convert_kernel(w, (4, 2, 3, 3, 3), "inflate")[0].shape == (4, 2, 3, 3, 3)


@torch.no_grad()
def test_depth_axis_is_axis_two_of_the_kernel() -> None:
    """A 5×3×3 inflated conv averages 5 slices along depth and applies the 2D kernel in-plane."""
    c2, c3 = _pair(1, 2, 3, 5)
    _load(c2, c3, "inflate")
    f = torch.arange(9.0) ** 1.5                       # a profile along one axis
    along_z = f.view(1, 1, 9, 1, 1).expand(1, 1, 9, 9, 9).contiguous()
    along_x = f.view(1, 1, 1, 1, 9).expand(1, 1, 9, 9, 9).contiguous()
    # varying along x only: every depth slice is the same image, so the 2D response appears on interior slices
    torch.testing.assert_close(c3(along_x)[:, :, 4], c2(along_x[:, :, 4]), atol=1e-4, rtol=0)
    # varying along depth only: an interior voxel sees the 5-slice mean times the kernel's in-plane sum
    z, y, x = 4, 4, 4
    expected = c2.bias + c2.weight.sum(dim=(1, 2, 3)) * f[z - 2:z + 3].mean()
    torch.testing.assert_close(c3(along_z)[0, :, z, y, x], expected, atol=1e-4, rtol=0)
    assert (c3(along_z)[0, :, z, y, x] - c3(along_x)[0, :, z, y, x]).abs().max() > 1e-2


def test_acs_split_matches_acsconv() -> None:
    assert acs_split(8) == (3, 3, 2)
    assert acs_split(7) == (3, 2, 2)
    assert acs_split(9) == (3, 3, 3)
    assert acs_split(64) == (22, 21, 21)


def test_acs_plane_placement() -> None:
    w = torch.randn(8, 2, 3, 3)
    k = acs_kernel(w, 3)
    assert k.shape == (8, 2, 3, 3, 3)
    a, c, s = acs_split(8)
    axial, coronal, sagittal = k[:a], k[a:a + c], k[a + c:]
    mask = torch.zeros(3, 3, 3, dtype=torch.bool)
    for group, index in ((axial, (1, slice(None), slice(None))), (coronal, (slice(None), 1, slice(None))),
                         (sagittal, (slice(None), slice(None), 1))):
        m = mask.clone()
        m[index] = True
        assert group[:, :, ~m].abs().sum() == 0          # non-zero only in its plane
    assert torch.equal(axial[:, :, 1, :, :], w[:a])        # (h, w) plane at the centre depth
    assert torch.equal(coronal[:, :, :, 1, :], w[a:a + c])  # (d, w) plane at the centre h
    assert torch.equal(sagittal[:, :, :, :, 1], w[a + c:])  # (d, h) plane at the centre w


@torch.no_grad()
def test_acs_groups_apply_the_2d_kernel_in_their_planes() -> None:
    c2, c3 = _pair(2, 6, 3, 3)
    assert _load(c2, c3, "acs") == "acs"
    a, c, _ = acs_split(6)
    v = torch.randn(1, 2, 7, 8, 9)
    y = c3(v)
    w, b = c2.weight, c2.bias
    for z in range(7):   # axial: the 2D conv of each (y, x) slice
        torch.testing.assert_close(y[:, :a, z], F.conv2d(v[:, :, z], w[:a], b[:a], padding=1), atol=TOL, rtol=0)
    for i in range(8):   # coronal: the 2D conv of each (z, x) slice
        torch.testing.assert_close(y[:, a:a + c, :, i], F.conv2d(v[:, :, :, i], w[a:a + c], b[a:a + c], padding=1),
                                   atol=TOL, rtol=0)
    for j in range(9):   # sagittal: the 2D conv of each (z, y) slice
        torch.testing.assert_close(y[:, a + c:, :, :, j], F.conv2d(v[..., j], w[a + c:], b[a + c:], padding=1),
                                   atol=TOL, rtol=0)


def test_acs_refuses_grouped_and_non_cubic_kernels() -> None:
    w = torch.randn(4, 2, 3, 3)
    with pytest.raises(XtlunetError, match="ungrouped"):
        convert_kernel(w, (4, 2, 3, 3, 3), "acs", groups=2)
    with pytest.raises(XtlunetError, match="cubic 3D kernel, got 5x3x3"):
        convert_kernel(w, (4, 2, 5, 3, 3), "acs")
    assert convert_kernel(w, (4, 2, 5, 3, 3), "inflate")[1] == "inflate"   # other modes take any depth


def test_refusals() -> None:
    w = torch.randn(4, 2, 3, 3)
    with pytest.raises(XtlunetError, match="odd kernel depth"):
        convert_kernel(w, (4, 2, 4, 3, 3), "center")
    with pytest.raises(XtlunetError, match="in-plane size must match"):
        convert_kernel(torch.randn(4, 2, 5, 5), (4, 2, 3, 3, 3), "inflate")
    with pytest.raises(XtlunetError, match="in-plane size must match"):
        convert_kernel(w, (8, 2, 3, 3, 3), "inflate")
    with pytest.raises(XtlunetError, match="did you mean 'inflate'"):
        convert_kernel(w, (4, 2, 3, 3, 3), "inflat")
    with pytest.raises(XtlunetError, match="2D conv kernel"):
        convert_kernel(torch.randn(4, 2, 1, 3, 3), (4, 2, 3, 3, 3), "inflate")
