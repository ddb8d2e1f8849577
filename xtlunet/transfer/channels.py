"""Input-channel adaptation of the first conv (timm's adapt_input_conv idea), for 2D or 3D kernels.

Rules, chosen so that an image replicated over the new channels gives the source network's response:

- same count: copy;
- 1 → N: repeat the kernel over N channels and divide by N;
- 3 → 1: sum over the three channels (a gray image seen by an RGB network);
- 3 → N: tile the three channel kernels to N and scale by 3/N;
- anything else: refused.

The rule is applied to the 2D kernel before its depth conversion, so it is the same in every mode
(copy / inflate / center / acs), and the replicated-channel equivalence composes with each mode's
own property (e.g. inflate: a constant-depth volume with replicated channels gives the 2D response).
"""
from __future__ import annotations

import math

from torch import Tensor

from xtlunet.errors import XtlunetError

IN_AXIS = 1  # input-channel axis of a conv kernel (out, in, *spatial)


def adapt_input_channels(weight: Tensor, n_out: int) -> tuple[Tensor, str]:
    """Adapt a conv kernel's input channels to `n_out`; return the new kernel and the rule name."""
    if weight.ndim < 3:
        raise XtlunetError(f"expected a conv kernel (out, in, *spatial), got shape {list(weight.shape)}")
    n_in = weight.shape[IN_AXIS]
    if n_out == n_in:
        return weight.clone(), "copy"
    if n_in == 1 and n_out > 1:
        reps = [1] * weight.ndim
        reps[IN_AXIS] = n_out
        return weight.repeat(*reps) / n_out, f"repeat-1-to-{n_out}"
    if n_in == 3 and n_out == 1:
        return weight.sum(dim=IN_AXIS, keepdim=True), "sum-3-to-1"
    if n_in == 3 and n_out > 1:
        reps = [1] * weight.ndim
        reps[IN_AXIS] = math.ceil(n_out / 3)
        return weight.repeat(*reps).narrow(IN_AXIS, 0, n_out) * (3 / n_out), f"tile-3-to-{n_out}"
    raise XtlunetError(f"no rule adapts a first conv with {n_in} input channels to {n_out}",
                       fix="pretrain with 1 or 3 input channels, or plan the target with "
                           f"{n_in} input channels")
