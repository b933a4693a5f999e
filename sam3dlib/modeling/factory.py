"""Build a SAM3D model from an experiment config (deterministic in the config's seed).

Used by training and by inference (a run is rebuilt from its saved config), so it lives
below both.
"""
from __future__ import annotations

import torch

from sam3dlib.modeling.build import build_sam3d
from sam3dlib.modeling.sam3d import SAM3D


def torch_dtype(name: str) -> torch.dtype | None:
    """``float32`` -> None (no autocast), ``bfloat16`` -> torch.bfloat16."""
    return {"float32": None, "bfloat16": torch.bfloat16}[name]


def build_model(config, spec) -> SAM3D:
    """SAM3D for ``config`` on dataset ``spec``, built under ``config.seed``.

    A random encoder (a ViT without a weights file, or ``encoder_weights="random"``) is therefore the same in training, in the
    feature cache and when a run is reloaded for prediction. The caller's RNG is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_sam3d(
            num_classes=spec.num_classes,
            in_channels=spec.num_channels,
            image_size=tuple(config.patch_size[1:]),
            encoder=config.encoder,
            encoder_weights=config.encoder_weights,
            skip=config.skip,
            deep_supervision=config.deep_supervision,
            encoder_dtype=torch_dtype(config.encoder_dtype),
            encoder_chunk_size=config.encoder_chunk_size,
            fast_attention=config.fast_attention,
            encoder_scale=config.encoder_scale,
            encoder_pool=config.encoder_pool,
        )
