"""Build a model (SAM3D or a registered baseline) from an experiment config (deterministic in the config's seed).

Used by training and by inference (a run is rebuilt from its saved config), so it lives
below both.
"""
from __future__ import annotations

import torch

from sam3dlib.modeling.models import build_registered, torch_dtype

__all__ = ["build_model", "torch_dtype"]


def build_model(config, spec) -> torch.nn.Module:
    """The model of ``config`` (``config.model`` in :data:`sam3dlib.modeling.models.MODELS`; SAM3D by
    default) on dataset ``spec``, built under ``config.seed``.

    A random encoder (no weights file, or ``encoder_weights="random"``) or a baseline's initial
    weights are therefore the same in training, in the feature cache and when a run is reloaded for
    prediction. The caller's RNG is untouched.
    """
    return build_registered(config, spec)
