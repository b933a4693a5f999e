"""Layers applied to a nearest-upsampled tensor, computed at the tensor's own resolution.

SAM3D's decoder upsamples every block's output in-plane by 2 (nearest) and the next layer
starts with a 3x3x3 convolution. On a nearest-upsampled input, each of the four output
phases (even/odd row x even/odd column) of that convolution sees only a 2x2 in-plane
neighbourhood of the low-resolution tensor, with the 3x3 kernel's taps summed into 2x2:

    phase 0 (even rows) reads rows (i-1, i) with taps (k0, k1 + k2)
    phase 1 (odd rows)  reads rows (i, i+1) with taps (k0 + k1, k2)

So one 3x2x2 convolution with 4x the output channels over the low-resolution input gives all
four phases: 48 instead of 108 multiply-adds per low-resolution voxel and channel pair
(0.44x), in the forward pass and in both backward products, and the upsampled input is never
stored. The result equals ``conv3d(upsample(x))`` up to float rounding; the 3x3x3 weights stay
the parameters (the tap sums are linear, so autograd returns their exact gradient).

A 1x1x1 convolution and an instance norm commute with nearest upsampling (the upsampled
tensor repeats every value 4 times: same mean, same biased variance), so they run at the low
resolution and only their output is upsampled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLE_FACTOR = (1, 2, 2)  # depth is never resampled


def upsample_in_plane(x: torch.Tensor) -> torch.Tensor:
    """Nearest upsampling by (1, 2, 2) of a ``B x C x D x H x W`` tensor (keeps its memory format)."""
    return F.interpolate(x, scale_factor=UPSAMPLE_FACTOR, mode="nearest")


def _phase_taps(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Along ``dim`` (size 3): phase 0 taps ``(k0, k1 + k2)``, phase 1 taps ``(k0 + k1, k2)``.

    Returns the two phases stacked in front: ``2 x ...`` with ``dim`` now of size 2.
    """
    k0, k1, k2 = weight.unbind(dim)
    return torch.stack([torch.stack([k0, k1 + k2], dim), torch.stack([k0 + k1, k2], dim)])


def phase_weights(weight: torch.Tensor) -> torch.Tensor:
    """``O x I x kd x 3 x 3`` kernel -> ``(4*O) x I x kd x 2 x 2``, phases (row, column) major."""
    rows = _phase_taps(weight, 3)  # a x O x I x kd x 2 x 3
    phased = _phase_taps(rows, 5).transpose(0, 1)  # a x c x O x I x kd x 2 x 2
    return phased.reshape(4 * weight.shape[0], *weight.shape[1:3], 2, 2)


def conv3d_of_upsampled(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``conv(upsample_in_plane(x))`` without building the upsampled tensor.

    Args:
        x: ``B x I x D x h x w`` input at half the in-plane resolution.
        conv: a stride-1 ``Conv3d`` with in-plane kernel 3 and padding 1, or kernel 1 and
            padding 0 (any depth kernel with "same" padding).

    Returns:
        ``B x O x D x 2h x 2w``, in ``x``'s memory format (channels-last-3d or contiguous).
    """
    kd, kh, kw = conv.kernel_size
    if conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        raise ValueError(f"conv3d_of_upsampled needs a plain stride-1 convolution, got {conv}")
    if (kh, kw) == (1, 1) and conv.padding[1:] == (0, 0):
        return upsample_in_plane(conv(x))
    if (kh, kw) != (3, 3) or conv.padding[1:] != (1, 1):
        raise ValueError(f"conv3d_of_upsampled supports in-plane kernels 1 (padding 0) and 3 (padding 1), got {conv}")
    b, _, d, h, w = x.shape
    out_ch = conv.out_channels
    bias = None if conv.bias is None else conv.bias.repeat(4)
    y = F.conv3d(x, phase_weights(conv.weight), bias, padding=(conv.padding[0], 1, 1))  # B x 4O x D x (h+1) x (w+1)
    # Phase (a, c) of output pixel (i, j) is y's row i + a, column j + c, channel group 2a + c:
    # an affine function of (i, a, j, c, o), so all four phases are one strided view of y.
    sb, sch, sd, sh, sw = y.stride()
    phases = y.as_strided(
        (b, d, h, 2, w, 2, out_ch),
        (sb, sd, sh, sh + 2 * out_ch * sch, sw, sw + out_ch * sch, sch),
        y.storage_offset(),
    )
    if x.is_contiguous(memory_format=torch.channels_last_3d):
        return phases.reshape(b, d, 2 * h, 2 * w, out_ch).permute(0, 4, 1, 2, 3)
    return phases.permute(0, 6, 1, 2, 3, 4, 5).reshape(b, out_ch, d, 2 * h, 2 * w)
