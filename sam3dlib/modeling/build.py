"""Builders: wire a registry slice encoder (optionally loaded from a checkpoint) to a decoder."""
from __future__ import annotations

import os

import torch

from sam3dlib.modeling.constants import RANDOM_INIT
from sam3dlib.modeling.decoder import Decoder3D
from sam3dlib.modeling.encoders import build_encoder, check_crop_size, embedding_pool, get_encoder_spec
from sam3dlib.modeling.sam3d import SAM3D


def build_sam3d(
    num_classes: int,
    in_channels: int = 1,
    image_size: tuple[int, int] | int = (176, 176),
    encoder: str = "vit_b",
    encoder_weights: str | os.PathLike | None = None,
    skip: bool = True,
    deep_supervision: bool = True,
    encoder_dtype: torch.dtype | None = None,
    encoder_chunk_size: int = 32,
    fast_attention: bool = True,
    encoder_scale: float | None = None,
    encoder_pool: int | None = None,
) -> SAM3D:
    """Build SAM3D for crops of ``image_size`` (H, W) pixels.

    Args:
        num_classes: output classes including background (Synapse 14, ACDC 4, Lung 2, BraTS 4).
        in_channels: input modalities (BraTS 4, others 1).
        image_size: in-plane crop size; checked against the encoder by
            :func:`sam3dlib.modeling.encoders.check_crop_size` (paper ViTs: multiples of 16).
        encoder: a key of :data:`sam3dlib.modeling.encoders.ENCODERS`: ``vit_b``, ``vit_l``,
            ``vit_h``, ``litemedsam`` (or ``vit_tiny`` for tests).
        encoder_weights: weights file (official SAM/MedSAM ``.pth`` for the ViTs, a LiteMedSAM
            ``.pth``), None for the encoder's default weights (random ViT; LiteMedSAM from the
            installed package, verified by size and sha256), or ``"random"`` (the encoder's
            architecture randomly initialised).
        skip: residual branches in the decoder (False = Table 5 ablation).
        deep_supervision: auxiliary heads at 1/2 and 1/4 resolution.
        encoder_dtype: autocast dtype for the encoder, e.g. ``torch.bfloat16``.
        encoder_chunk_size: slices per encoder call.
        fast_attention: run a SAM ViT's attention through :mod:`sam3dlib.modeling.fast_attention`
            (an exact rewrite of SAM's; embeddings equal to ~1e-6 relative, faster on CPU
            and GPU). False keeps segment-anything's own forward.
        encoder_scale: slices are resized by this factor before encoding; None: the encoder's
            default (crop size for the ViTs as in the paper, native 256 for LiteMedSAM).
        encoder_pool: average-pool the slice embeddings by this factor before the decoder;
            None: the encoder's default (registry ``default_pool``: 1, measured).

    Examples::

        >>> model = build_sam3d(num_classes=14, image_size=(176, 176))   # Synapse
        >>> model = build_sam3d(num_classes=4, in_channels=4, image_size=64)  # BraTS
        >>> model = build_sam3d(num_classes=3, image_size=128, encoder="litemedsam")
        >>> model = build_sam3d(num_classes=14, encoder_weights="checkpoints/sam_vit_b_01ec64.pth")
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    encoder_pool = embedding_pool(encoder, encoder_pool)
    input_hw, upsamplings = check_crop_size(encoder, image_size, encoder_scale, encoder_pool)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    net, source, sha = build_encoder(encoder, input_hw, encoder_weights, fast_attention)
    spec = get_encoder_spec(encoder)
    decoder = Decoder3D(in_channels * spec.channels, num_classes, skip=skip, deep_supervision=deep_supervision,
                        upsamplings=upsamplings)
    return SAM3D(
        net,
        decoder,
        in_channels=in_channels,
        encoder_name=encoder,
        crop_hw=tuple(int(s) for s in image_size),
        input_hw=input_hw,
        embedding_pool=encoder_pool,
        encoder_source=source or RANDOM_INIT,
        encoder_sha256=sha,
        encoder_chunk_size=encoder_chunk_size,
        encoder_dtype=encoder_dtype,
    )
