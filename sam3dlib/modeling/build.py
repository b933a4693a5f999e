"""Builders: wire a SAM image encoder (optionally loaded from a checkpoint) to a decoder."""
from __future__ import annotations

import os

import torch

from sam3dlib.modeling.constants import EMBED_CHANNELS, RANDOM_INIT
from sam3dlib.modeling.decoder import Decoder3D
from sam3dlib.modeling.encoders import build_image_encoder, check_image_size
from sam3dlib.modeling.fast_attention import enable_fast_attention
from sam3dlib.modeling.sam3d import SAM3D
from sam3dlib.modeling.sam_checkpoint import CheckpointError, file_sha256, load_encoder_state


def build_sam3d(
    num_classes: int,
    in_channels: int = 1,
    image_size: tuple[int, int] | int = (176, 176),
    encoder: str = "vit_b",
    checkpoint: str | os.PathLike | None = None,
    skip: bool = True,
    deep_supervision: bool = True,
    encoder_dtype: torch.dtype | None = None,
    encoder_chunk_size: int = 32,
    fast_attention: bool = True,
) -> SAM3D:
    """Build SAM3D for crops of ``image_size`` (H, W) pixels.

    Args:
        num_classes: output classes including background (Synapse 14, ACDC 4, Lung 2, BraTS 4).
        in_channels: input modalities (BraTS 4, others 1).
        image_size: in-plane crop size; multiples of 16.
        encoder: ``vit_b``, ``vit_l``, ``vit_h`` (or ``vit_tiny`` for tests).
        checkpoint: official SAM/MedSAM ``.pth`` file, or None for a random encoder.
        skip: residual branches in the decoder (False = Table 5 ablation).
        deep_supervision: auxiliary heads at 1/2 and 1/4 resolution.
        encoder_dtype: autocast dtype for the encoder, e.g. ``torch.bfloat16``.
        encoder_chunk_size: slices per encoder call.
        fast_attention: run the encoder's attention through :mod:`sam3dlib.modeling.fast_attention`
            (an exact rewrite of SAM's; embeddings equal to ~1e-6 relative, faster on CPU
            and GPU). False keeps segment-anything's own forward.

    Examples::

        >>> model = build_sam3d(num_classes=14, image_size=(176, 176))   # Synapse
        >>> model = build_sam3d(num_classes=4, in_channels=4, image_size=64)  # BraTS
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    image_size = check_image_size(image_size)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    vit = build_image_encoder(encoder, image_size)
    source, sha = RANDOM_INIT, None
    if checkpoint is not None:
        state = load_encoder_state(checkpoint, encoder, image_size)
        try:
            result = vit.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatch; PyTorch lists each tensor on its own line
            details = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
            raise CheckpointError(f"{checkpoint}: image encoder tensors do not fit {encoder}: {details}") from exc
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{checkpoint}: image encoder keys do not match segment-anything's {encoder}: "
                f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
        source, sha = os.fspath(checkpoint), file_sha256(checkpoint)
    if fast_attention:
        enable_fast_attention(vit)
    decoder = Decoder3D(in_channels * EMBED_CHANNELS, num_classes, skip=skip, deep_supervision=deep_supervision)
    return SAM3D(
        vit,
        decoder,
        in_channels=in_channels,
        encoder_name=encoder,
        encoder_source=source,
        encoder_sha256=sha,
        encoder_chunk_size=encoder_chunk_size,
        encoder_dtype=encoder_dtype,
    )
