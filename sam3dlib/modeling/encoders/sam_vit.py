"""Segment-Anything ViT image encoders (``vit_b``, ``vit_l``, ``vit_h``; ``vit_tiny`` for tests).

The numbers are those of segment-anything's ``build_sam_vit_{b,l,h}``; ``vit_tiny`` is a
two-block, randomly initialised stand-in of ours for fast tests only (no official weights
exist for it). The encoder is built at its input size (the crop size times the encoder input
scale; the paper: the crop size) and official weights are resized to it
(:mod:`sam3dlib.modeling.sam_checkpoint`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT

from sam3dlib.modeling.constants import EMBED_CHANNELS, PATCH_SIZE
from sam3dlib.utils.errors import ConfigError


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14


ENCODER_CONFIGS: dict[str, ViTConfig] = {
    "vit_b": ViTConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ViTConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ViTConfig(1280, 32, 16, (7, 15, 23, 31)),
    # Not a SAM model: a tiny random ViT so that tests run in seconds on a CPU.
    "vit_tiny": ViTConfig(64, 2, 2, (1,)),
}

#: Official checkpoint file names, for messages and defaults.
OFFICIAL_CHECKPOINTS = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
#: Where Segment Anything publishes them (its README's model checkpoints).
OFFICIAL_URL_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
#: Their md5 digests: the 6 hex characters in each file name are its first 6.
OFFICIAL_MD5 = {
    "vit_b": "01ec64d29a2fca3f0661936605ae66f8",
    "vit_l": "0b3195507c641ddb6910d2bb5adee89c",
    "vit_h": "4b8939a88964f0f4ff5f5b2642c598a6",
}


def encoder_config(name: str) -> ViTConfig:
    try:
        return ENCODER_CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {sorted(ENCODER_CONFIGS)}") from None


def check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """``image_size`` as ints; ValueError unless both are positive multiples of SAM's patch size."""
    h, w = (int(s) for s in image_size)
    if h <= 0 or w <= 0 or h % PATCH_SIZE or w % PATCH_SIZE:
        raise ConfigError(f"image_size {image_size} must be positive multiples of {PATCH_SIZE} (SAM's patch size)")
    return h, w


def build_image_encoder(name: str, image_size: tuple[int, int]) -> ImageEncoderViT:
    """segment-anything's ``ImageEncoderViT`` built for crops of ``image_size`` pixels.

    SAM's class takes one ``img_size``; for non-square crops the position embedding is
    re-created at ``(H/16, W/16)`` and the global blocks' relative-position tables at
    ``2*H/16-1`` and ``2*W/16-1``.
    """
    cfg = encoder_config(name)
    h, w = check_image_size(image_size)
    vit = ImageEncoderViT(
        depth=cfg.depth,
        embed_dim=cfg.embed_dim,
        img_size=h,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=cfg.num_heads,
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=cfg.global_attn_indexes,
        window_size=cfg.window_size,
        out_chans=EMBED_CHANNELS,
    )
    if w != h:
        _make_non_square(vit, cfg, h // PATCH_SIZE, w // PATCH_SIZE)
    return vit


def _make_non_square(vit: ImageEncoderViT, cfg: ViTConfig, th: int, tw: int) -> None:
    vit.pos_embed = torch.nn.Parameter(torch.zeros(1, th, tw, cfg.embed_dim))
    head_dim = cfg.embed_dim // cfg.num_heads
    for i in cfg.global_attn_indexes:
        attn = vit.blocks[i].attn
        attn.rel_pos_h = torch.nn.Parameter(torch.zeros(2 * th - 1, head_dim))
        attn.rel_pos_w = torch.nn.Parameter(torch.zeros(2 * tw - 1, head_dim))


def load_sam_vit_weights(vit: ImageEncoderViT, checkpoint: str | os.PathLike, name: str,
                         image_size: tuple[int, int]) -> str:
    """Load an official SAM/MedSAM file's image encoder into ``vit`` (resized); return its sha256.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, not a SAM checkpoint, another ViT size, or tensors that
            do not fit.
    """
    from sam3dlib.modeling.sam_checkpoint import (
        CheckpointError,
        file_sha256,
        load_encoder_state,
        official_identity,
    )

    official_identity(checkpoint)  # an official file name must hold the official file (md5)
    state = load_encoder_state(checkpoint, name, image_size)
    try:
        result = vit.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch; PyTorch lists each tensor on its own line
        details = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
        raise CheckpointError(f"{checkpoint}: image encoder tensors do not fit {name}: {details}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{checkpoint}: image encoder keys do not match segment-anything's {name}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return file_sha256(checkpoint)
