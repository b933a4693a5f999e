"""The lightweight 3D residual decoder of SAM3D (paper Fig. 2) with deep-supervision heads.

Input: slice embeddings ``B x (C*256) x D x H/16 x W/16``. Four residual blocks halve the
channels (128, 64, 32, 16) and upsample in-plane by 2 each, so the last block is at full
resolution ``D x H x W``. The depth axis is never resampled.
"""
from __future__ import annotations

import torch
from torch import nn

from .constants import DECODER_CHANNELS


def _conv_norm(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv3d(in_ch, out_ch, kernel, padding=kernel // 2), nn.InstanceNorm3d(out_ch)]


class ResidualBlock3D(nn.Module):
    """conv3-IN-LReLU-conv3-IN (+ conv1-IN residual branch), sum, LReLU, upsample (1, 2, 2).

    Args:
        in_channels (int): channels in.
        out_channels (int): channels out.
        skip (bool): keep the 1x1x1 residual branch; ``False`` is the Table 5 ablation.
    """

    def __init__(self, in_channels: int, out_channels: int, skip: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm(in_channels, out_channels, 3),
            nn.LeakyReLU(0.01, inplace=True),
            *_conv_norm(out_channels, out_channels, 3),
        )
        self.residual = nn.Sequential(*_conv_norm(in_channels, out_channels, 1)) if skip else None
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.up = nn.Upsample(scale_factor=(1, 2, 2), mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual is not None:
            y = y + self.residual(x)
        return self.up(self.act(y))


class SegmentationHead(nn.Module):
    """conv3 to half the channels, IN, LReLU, conv1 to ``num_classes`` logits."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_conv_norm(in_channels, in_channels // 2, 3),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(in_channels // 2, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder3D(nn.Module):
    """Residual 3D decoder.

    Args:
        in_channels (int): ``C*256`` for C input modalities.
        num_classes (int): output classes, background included.
        skip (bool): residual branches in the blocks.
        deep_supervision (bool): add heads on the 1/2 and 1/4 resolution outputs.

    ``forward`` returns full-resolution logits ``B x K x D x H x W``; in training mode with
    deep supervision it returns ``[full, half, quarter]`` (MONAI DynUNet's contract).
    """

    def __init__(self, in_channels: int, num_classes: int, skip: bool = True, deep_supervision: bool = True) -> None:
        super().__init__()
        widths = (in_channels, *DECODER_CHANNELS)
        self.blocks = nn.ModuleList(ResidualBlock3D(a, b, skip) for a, b in zip(widths[:-1], widths[1:]))
        self.head = SegmentationHead(DECODER_CHANNELS[-1], num_classes)
        self.deep_supervision = deep_supervision
        # aux_heads[0] at 1/2 (32 channels), aux_heads[1] at 1/4 (64 channels)
        self.aux_heads = (
            nn.ModuleList(SegmentationHead(c, num_classes) for c in DECODER_CHANNELS[-2:-4:-1])
            if deep_supervision
            else nn.ModuleList()
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        outs = []
        x = features
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        logits = self.head(outs[-1])
        if not (self.training and self.deep_supervision):
            return logits
        return [logits] + [head(o) for head, o in zip(self.aux_heads, outs[-2:-4:-1])]
