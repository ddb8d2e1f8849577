"""2D→3D kernel conversion: copy, inflate, center and acs, as pure tensor functions.

Axis convention: a 2D kernel is ``(out, in, kh, kw)``; its 3D counterpart is ``(out, in, d, kh, kw)``.
Axis 2 of the 3D kernel is the *depth* axis (array axis z of a ``(z, y, x)`` volume); the last two
axes are the in-plane axes that carry the 2D kernel unchanged. A 3D kernel of depth 1 receives an
exact copy whatever the mode (anisotropic stages).

Modes for a depth ``d > 1``:

- ``inflate`` (I3D): the 2D kernel repeated ``d`` times along depth and divided by ``d``, so a volume
  constant along depth gives the 2D response on every slice.
- ``center``: the 2D kernel in the middle depth slice, zeros elsewhere (``d`` odd); every slice then
  sees exactly the 2D network.
- ``acs`` (ACSConv, Yang et al. 2021): output channels split into three groups of sizes
  ``acs_split(out)``; the axial group holds the 2D kernel in the ``(h, w)`` plane at the centre depth,
  the coronal group in the ``(d, w)`` plane at the centre ``h``, the sagittal group in the ``(d, h)``
  plane at the centre ``w``. Only for cubic kernels (``d == kh == kw``) and ungrouped convolutions.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from xtlunet.errors import XtlunetError, look_up_option

MODES = ("inflate", "center", "acs")
DEPTH_AXIS = 2  # axis of a 3D conv kernel (out, in, d, kh, kw) along which 2D kernels are converted


def acs_split(out_channels: int) -> tuple[int, int, int]:
    """Sizes of the axial, coronal and sagittal output-channel groups (remainder to the first groups)."""
    base, rest = divmod(out_channels, 3)
    return base + (rest > 0), base + (rest > 1), base


def inflate_kernel(weight: Tensor, depth: int) -> Tensor:
    """Repeat a 2D kernel `depth` times along the depth axis and divide by `depth` (I3D)."""
    _check_2d(weight)
    return (weight / depth).unsqueeze(DEPTH_AXIS).expand(-1, -1, depth, -1, -1).contiguous()


def center_kernel(weight: Tensor, depth: int) -> Tensor:
    """Place a 2D kernel in the middle depth slice of a zero 3D kernel (`depth` must be odd)."""
    _check_2d(weight)
    if depth % 2 == 0:
        raise XtlunetError(f"'center' conversion needs an odd kernel depth, got {depth}",
                           fix="plan odd depth kernels, or use mode 'inflate'")
    out = weight.new_zeros(weight.shape[0], weight.shape[1], depth, *weight.shape[2:])
    out[:, :, depth // 2] = weight
    return out


def acs_kernel(weight: Tensor, depth: int, groups: int = 1) -> Tensor:
    """Split output channels into axial/coronal/sagittal groups and place the 2D kernel in each plane."""
    _check_2d(weight)
    kh, kw = weight.shape[2:]
    if groups != 1:
        raise XtlunetError(f"'acs' conversion needs an ungrouped convolution, got groups={groups}",
                           fix="use mode 'inflate' or 'center' for grouped convolutions")
    if not depth == kh == kw:
        raise XtlunetError(f"'acs' conversion needs a cubic 3D kernel, got {depth}x{kh}x{kw}",
                           fix="plan cubic kernels (or depth 1) for the converted stages, or use mode 'inflate'")
    a, c, _ = acs_split(weight.shape[0])
    mid = depth // 2
    out = weight.new_zeros(weight.shape[0], weight.shape[1], depth, kh, kw)
    out[:a, :, mid, :, :] = weight[:a]            # axial: (h, w) plane at the centre depth
    out[a:a + c, :, :, mid, :] = weight[a:a + c]  # coronal: (d, w) plane at the centre h
    out[a + c:, :, :, :, mid] = weight[a + c:]    # sagittal: (d, h) plane at the centre w
    return out


def convert_kernel(weight: Tensor, target_shape: Sequence[int], mode: str, groups: int = 1) -> tuple[Tensor, str]:
    """Convert a 2D kernel to the planned 3D kernel shape; return it and the rule applied."""
    look_up_option(mode, MODES, "transfer mode")
    _check_2d(weight)
    target_shape = tuple(int(s) for s in target_shape)
    if len(target_shape) != 5:
        raise XtlunetError(f"target kernel shape {list(target_shape)} is not a 3D kernel (out, in, d, kh, kw)")
    if tuple(weight.shape[:2]) != target_shape[:2] or tuple(weight.shape[2:]) != target_shape[3:]:
        raise XtlunetError(
            f"2D kernel {list(weight.shape)} does not fit 3D kernel {list(target_shape)}: channels and in-plane "
            "size must match and no rule converts them",
            fix="build the 3D network from the source's ArchitectureDescription (same widths and in-plane kernels)")
    depth = target_shape[DEPTH_AXIS]
    if depth == 1:
        return weight.unsqueeze(DEPTH_AXIS).clone(), "copy"
    if mode == "inflate":
        return inflate_kernel(weight, depth), "inflate"
    if mode == "center":
        return center_kernel(weight, depth), "center"
    return acs_kernel(weight, depth, groups), "acs"


def _check_2d(weight: Tensor) -> None:
    """Refuse anything that is not a 2D conv kernel (out, in, kh, kw)."""
    if weight.ndim != 4:
        raise XtlunetError(f"expected a 2D conv kernel (out, in, kh, kw), got shape {list(weight.shape)}")
