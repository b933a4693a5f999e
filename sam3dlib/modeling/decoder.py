"""The lightweight 3D residual decoder of SAM3D (paper Fig. 2) with deep-supervision heads.

Input: slice embeddings ``B x (C*256) x D x h x w`` on the encoder's grid. Four residual
blocks halve the channels (128, 64, 32, 16); in the paper's configuration (ViT at the crop
size, stride 16) blocks 2-4 and the head each upsample in-plane by 2, so the decoder ends at
full resolution ``D x 16h x 16w``. For a finer grid (an encoder input scale > 1, or a stride-4
encoder) the same blocks upsample only where needed: ``upsamplings`` = log2(crop / grid) of the
four stages do, the last ones (nearest the output), so the full-resolution head always
matches the crop (:func:`sam3dlib.modeling.encoders.decoder_upsamplings`). A deep-supervision
head upsamples when the block after its input does, so it sits at the input resolution of
that block (1/2 and 1/4 of the crop in the paper's case). The depth axis is never resampled.

Each block's nearest upsampling is applied as the first step of whatever reads the block's
output (the next block, a head). With ``fused_upsample`` (the default) those readers run
their first convolution on the low-resolution tensor through
:func:`sam3dlib.modeling.upsample_conv.conv3d_of_upsampled`, an exact rewrite with 0.44x the
multiply-adds; ``fused_upsample=False`` upsamples first and convolves, literally. Both give
the same function and gradients up to float rounding (``tests/test_decoder.py``) and the same
state dict. ``channels_last`` keeps the activations channels-last-3d: it sped up the literal
path on a CPU but slowed the fused one (``docs/PERFORMANCE.md``), so it is off by default
(the measured-best setting; ``tests/test_decoder.py`` checks the trainer's decoder uses it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam3dlib.modeling.constants import DECODER_CHANNELS
from sam3dlib.modeling.upsample_conv import conv3d_of_upsampled, upsample_in_plane

#: x2 in-plane upsampling stages of the decoder: the inputs of blocks 2-4 and the head.
UPSAMPLING_STAGES = 4


class InstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` (no affine) that leaves a channels-last-3d input channels-last.

    PyTorch's instance norm makes its input contiguous, which would convert every activation
    back and forth between memory formats; the two-moment form below keeps the layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last_3d):
            return super().forward(x)
        var, mean = torch.var_mean(x, dim=(2, 3, 4), keepdim=True, correction=0)
        return (x - mean) * torch.rsqrt(var + self.eps)


class PointwiseConv3d(nn.Conv3d):
    """A 1x1x1 ``nn.Conv3d`` (same parameters) computed as one matrix product over the voxels.

    oneDNN runs 1x1x1 3D convolutions with few channels far below its GEMM speed (the
    head's 8 -> K logits at full resolution took 8 % of a decoder step for about 1 % of its
    FLOPs); a matmul over ``B x C x (D*H*W)`` is memory-bound instead.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.view(self.out_channels, self.in_channels)
        if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
            return F.linear(x.permute(0, 2, 3, 4, 1), weight, self.bias).permute(0, 4, 1, 2, 3)
        b = x.shape[0]
        bias = self.bias if self.bias is not None else weight.new_zeros(self.out_channels)
        out = torch.baddbmm(bias[None, :, None].expand(b, -1, 1), weight.expand(b, -1, -1), x.flatten(2))
        return out.view(b, self.out_channels, *x.shape[2:])


def _conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv3d:
    return PointwiseConv3d(in_ch, out_ch) if kernel == 1 else nn.Conv3d(in_ch, out_ch, kernel, padding=kernel // 2)


def _conv_norm(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [_conv(in_ch, out_ch, kernel), InstanceNorm3d(out_ch)]


def _run_upsampled(layers: nn.Sequential, x: torch.Tensor, upsample: bool, fused: bool) -> torch.Tensor:
    """``layers(upsample_in_plane(x))`` if ``upsample`` else ``layers(x)``; the first layer is a conv."""
    if not upsample:
        return layers(x)
    if not fused:
        return layers(upsample_in_plane(x))
    return layers[1:](conv3d_of_upsampled(x, layers[0]))


class ResidualBlock3D(nn.Module):
    """[upsample (1, 2, 2)], conv3-IN-LReLU-conv3-IN (+ conv1-IN residual branch), sum, LReLU.

    Args:
        in_channels (int): channels in.
        out_channels (int): channels out.
        skip (bool): keep the 1x1x1 residual branch; ``False`` is the Table 5 ablation.
        upsample_input (bool): the input is the previous block's output, still at half the
            in-plane resolution (every block but the first).
    """

    def __init__(self, in_channels: int, out_channels: int, skip: bool = True, upsample_input: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm(in_channels, out_channels, 3),
            nn.LeakyReLU(0.01, inplace=True),
            *_conv_norm(out_channels, out_channels, 3),
        )
        self.residual = nn.Sequential(*_conv_norm(in_channels, out_channels, 1)) if skip else None
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.upsample_input = upsample_input

    def forward(self, x: torch.Tensor, fused_upsample: bool = True) -> torch.Tensor:
        y = _run_upsampled(self.body, x, self.upsample_input, fused_upsample)
        if self.residual is not None:
            y = y + _run_upsampled(self.residual, x, self.upsample_input, fused_upsample)
        return self.act(y)


class SegmentationHead(nn.Module):
    """[Upsample (1, 2, 2)], conv3 to half the channels, IN, LReLU, conv1 to ``num_classes`` logits."""

    def __init__(self, in_channels: int, num_classes: int, upsample_input: bool = True) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_conv_norm(in_channels, in_channels // 2, 3),
            nn.LeakyReLU(0.01, inplace=True),
            PointwiseConv3d(in_channels // 2, num_classes),
        )
        self.upsample_input = upsample_input

    def forward(self, x: torch.Tensor, fused_upsample: bool = True) -> torch.Tensor:
        return _run_upsampled(self.layers, x, self.upsample_input, fused_upsample)


class Decoder3D(nn.Module):
    """Residual 3D decoder.

    Args:
        in_channels (int): ``C*256`` for C input modalities.
        num_classes (int): output classes, background included.
        skip (bool): residual branches in the blocks.
        deep_supervision (bool): add heads on the 1/2 and 1/4 resolution outputs.
        fused_upsample (bool): convolve upsampled tensors at their low resolution (exact, faster).
        channels_last (bool): keep activations channels-last-3d (off: measured slower with the
            fused path).
        upsamplings (int): x2 in-plane upsamplings from the input grid to the output, 0 to 4
            (4: the paper's stride-16 grid at the crop size).

    ``forward`` returns full-resolution logits ``B x K x D x H x W``; in training mode with
    deep supervision it returns ``[full, half, quarter]`` (MONAI DynUNet's contract; with fewer
    than 4 upsamplings the auxiliary outputs can be finer, see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        skip: bool = True,
        deep_supervision: bool = True,
        fused_upsample: bool = True,
        channels_last: bool = False,
        upsamplings: int = UPSAMPLING_STAGES,
    ) -> None:
        super().__init__()
        if not 0 <= upsamplings <= UPSAMPLING_STAGES:
            raise ValueError(f"upsamplings must be 0 ... {UPSAMPLING_STAGES}, got {upsamplings}")
        # stage i upsamples the input of block i+1 (i < 3) or of the head (i = 3); the last ones do
        ups = [i >= UPSAMPLING_STAGES - upsamplings for i in range(UPSAMPLING_STAGES)]
        widths = (in_channels, *DECODER_CHANNELS)
        self.blocks = nn.ModuleList(
            ResidualBlock3D(a, b, skip, upsample_input=i > 0 and ups[i - 1])
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.head = SegmentationHead(DECODER_CHANNELS[-1], num_classes, upsample_input=ups[-1])
        self.deep_supervision = deep_supervision
        self.fused_upsample = fused_upsample
        self.channels_last = channels_last
        self.upsamplings = upsamplings
        # aux_heads[0] on block 3's output (32 channels; 1/2 in the paper), aux_heads[1] on block 2's
        # (64 channels; 1/4): each upsamples when the block that reads the same tensor does
        self.aux_heads = (
            nn.ModuleList(SegmentationHead(c, num_classes, upsample_input=u)
                          for c, u in zip(DECODER_CHANNELS[-2:-4:-1], (ups[2], ups[1])))
            if deep_supervision
            else nn.ModuleList()
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        fused = self.fused_upsample
        x = features.contiguous(memory_format=torch.channels_last_3d if self.channels_last else torch.contiguous_format)
        outs = []  # block outputs before their upsampling (paper: 1/16, 1/8, 1/4, 1/2 of full resolution)
        for block in self.blocks:
            x = block(x, fused)
            outs.append(x)
        logits = self.head(outs[-1], fused)
        if not (self.training and self.deep_supervision):
            return logits
        return [logits] + [head(o, fused) for head, o in zip(self.aux_heads, outs[-2:-4:-1])]
