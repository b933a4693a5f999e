"""How much memory one training sample takes, for planning crop and batch sizes.

:func:`training_bytes_per_voxel` counts, on a tiny patch, the bytes of every tensor that
autograd keeps for the backward pass of the decoder and the deep-supervised Dice + CE loss
(``torch.autograd.graph.saved_tensors_hooks``), plus the slice embeddings and the logits. All
of them scale with the patch's voxel count (the decoder's widths are fixed and H, W are
multiples of the encoder's 16-pixel patch), so bytes per voxel times voxels is the activation
memory of a patch of any size. Not counted: the frozen encoder (no gradients; its
temporaries per ``encoder_chunk_size`` slices do not grow with the batch), parameters and
optimizer state (a few tens of MB, :func:`decoder_state_bytes`), allocator overhead.
"""
from __future__ import annotations

from functools import cache

import torch

from sam3dlib.modeling.constants import EMBED_CHANNELS, PATCH_SIZE
from sam3dlib.modeling.decoder import Decoder3D
from sam3dlib.modeling.losses import sam3d_loss

#: the two patches (D, H, W) the count is made on; the slope between them is the per-voxel cost
_PROBES = ((2, 2 * PATCH_SIZE, 2 * PATCH_SIZE), (4, 4 * PATCH_SIZE, 4 * PATCH_SIZE))


def _saved_bytes(decoder: Decoder3D, in_channels: int, num_classes: int, patch: tuple[int, int, int]) -> int:
    """Bytes autograd saves for one forward of ``decoder`` + loss on ``patch``, plus inputs and logits."""
    d, h, w = patch
    feats = torch.randn(1, in_channels * EMBED_CHANNELS, d, h // PATCH_SIZE, w // PATCH_SIZE)
    target = torch.randint(0, num_classes, (1, d, h, w))
    saved: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        # a tensor saved by several nodes is counted once
        saved[(t.data_ptr(), tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = decoder(feats)
        outs = out if isinstance(out, list) else [out]
        sam3d_loss()(outs, target)
    return sum(saved.values()) + feats.numel() * 4 + sum(o.numel() * 4 for o in outs) + target.numel() * 8


@cache
def training_bytes_per_voxel(in_channels: int, num_classes: int, deep_supervision: bool = True) -> float:
    """Activation bytes per voxel of one float32 training sample (decoder + loss, forward and backward).

    Measured as the slope of :func:`_saved_bytes` between two small patches, so tensors of a
    fixed size (weights, the decoder's phase kernels) drop out.

    Args:
        in_channels: input modalities C (the decoder reads ``C x 256`` embedding channels).
        num_classes: output classes K, background included.
        deep_supervision: the 1/2 and 1/4 resolution heads are trained too.

    Returns:
        Bytes per voxel of the (D, H, W) crop; multiply by ``D * H * W * batch_size``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        decoder = Decoder3D(in_channels * EMBED_CHANNELS, num_classes, deep_supervision=deep_supervision).train()
        (b1, b2) = (_saved_bytes(decoder, in_channels, num_classes, p) for p in _PROBES)
    v1, v2 = (d * h * w for d, h, w in _PROBES)
    return (b2 - b1) / (v2 - v1)


def decoder_state_bytes(in_channels: int, num_classes: int) -> int:
    """Bytes of the decoder's weights, gradients and SGD momentum (float32)."""
    decoder = Decoder3D(in_channels * EMBED_CHANNELS, num_classes)
    return 3 * 4 * sum(p.numel() for p in decoder.parameters())
