"""The model registry: a name -> a builder of the network the trainer trains (``config.model``).

Like segment-anything's ``sam_model_registry``: :data:`MODELS` maps ``sam3d`` (the paper's model:
frozen slice encoder + trainable 3D decoder) and the paper's baselines retrained under the same
protocol (``unetr``, ``nnunet``, ``swinunetr``; :mod:`sam3dlib.modeling.baselines`) to a builder
``build(config, spec) -> nn.Module``. Every model offers the trainer the same interface
(``decoder``: the trainable module; ``encode``: the decoder's input from a volume crop), so data,
split, sampling, augmentation, loss, schedule and evaluation are the same for all of them.

Examples::

    >>> MODELS["unetr"].paper_method
    'UNETR'
    >>> sorted(MODELS)
    ['nnunet', 'sam3d', 'swinunetr', 'unetr']
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sam3dlib.modeling import baselines
from sam3dlib.modeling.build import build_sam3d
from sam3dlib.utils.errors import ConfigError

#: the paper's model; the default of ``config.model``
SAM3D_MODEL = "sam3d"


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry.

    Attributes:
        name: the registry key (``--set model=NAME``).
        build: ``build(config, spec) -> nn.Module`` (a :class:`~sam3dlib.modeling.sam3d.SAM3D` or a
            :class:`~sam3dlib.modeling.baselines.VolumeModel`); called under the config's seed.
        frozen_encoder: True for SAM3D (features may be cached); False: the network takes the
            volume and trains whole (always ``encoder_mode="online"``, no feature cache).
        paper_method: the method name of its rows in the paper's tables (``UNETR`` ...).
        crop_multiple: every crop side must be a multiple of this (None: no such rule; SAM3D's
            crop is checked against its encoder, nnunet's by its plan).
        source: where the network comes from.
        original_optimizer: the original paper's optimiser, where it differs from SAM3D's SGD.
    """

    name: str
    build: Callable[[Any, Any], nn.Module]
    frozen_encoder: bool
    paper_method: str
    crop_multiple: int | None = None
    source: str = ""
    original_optimizer: str = ""

    def check_crop(self, patch_size: tuple[int, int, int], spacing=None) -> None:
        """Raise ValueError when the network cannot take crops of ``patch_size`` (D, H, W)."""
        if self.crop_multiple and any(int(s) % self.crop_multiple for s in patch_size):
            raise ValueError(f"the {self.name} model needs every crop side a multiple of {self.crop_multiple} "
                             f"(e.g. {baselines.round_up(patch_size, self.crop_multiple)})")
        if self.name == "swinunetr" and all(int(s) == self.crop_multiple for s in patch_size):
            raise ValueError(f"the swinunetr model needs one crop side of at least {2 * self.crop_multiple}: its "
                             "instance-normalised bottleneck cannot train on a single voxel")
        if self.name == "nnunet":
            baselines.plan_dynunet(patch_size, spacing)


def torch_dtype(name: str) -> torch.dtype | None:
    """``float32`` -> None (no autocast), ``bfloat16`` -> torch.bfloat16."""
    return {"float32": None, "bfloat16": torch.bfloat16}[name]


def _build_sam3d(config, spec) -> nn.Module:
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


def _volume_model(name: str, network: nn.Module, config, spec) -> nn.Module:
    return baselines.VolumeModel(network, name=name, in_channels=spec.num_channels, patch_size=config.patch_size)


def _build_unetr(config, spec) -> nn.Module:
    net = baselines.build_unetr(spec.num_classes, spec.num_channels, config.patch_size)
    return _volume_model("unetr", net, config, spec)


def _build_nnunet(config, spec) -> nn.Module:
    net = baselines.build_nnunet(spec.num_classes, spec.num_channels, config.patch_size, spec.target_spacing,
                                 deep_supervision=config.deep_supervision)
    return _volume_model("nnunet", net, config, spec)


def _build_swinunetr(config, spec) -> nn.Module:
    net = baselines.build_swinunetr(spec.num_classes, spec.num_channels, config.patch_size)
    return _volume_model("swinunetr", net, config, spec)


MODELS: dict[str, ModelEntry] = {
    SAM3D_MODEL: ModelEntry(SAM3D_MODEL, _build_sam3d, True, "SAM3D", source="sam3dlib (the paper's model)"),
    "unetr": ModelEntry("unetr", _build_unetr, False, "UNETR", crop_multiple=16,
                        source="monai.networks.nets.UNETR, the UNETR paper's configuration",
                        original_optimizer="AdamW, lr 1e-4, weight decay 1e-5 (UNETR paper)"),
    "nnunet": ModelEntry("nnunet", _build_nnunet, False, "nnUNet",
                         source="monai.networks.nets.DynUNet, planned as nnU-Net's 3d_fullres",
                         original_optimizer="the same SGD + poly schedule (nnU-Net's, which SAM3D's code keeps)"),
    "swinunetr": ModelEntry("swinunetr", _build_swinunetr, False, "Swin UNETR", crop_multiple=32,
                            source="monai.networks.nets.SwinUNETR, the Swin UNETR paper's configuration",
                            original_optimizer="AdamW, lr 8e-4, cosine schedule with warm-up (Swin UNETR paper)"),
}


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry ``name``.

    Raises:
        ConfigError: an unknown model (the message lists the registry).
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def build_registered(config, spec) -> nn.Module:
    """``MODELS[config.model].build(config, spec)`` under ``config.seed`` (the caller's RNG untouched)."""
    entry = get_model_entry(getattr(config, "model", SAM3D_MODEL))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return entry.build(config, spec)


def trainable_parameters(model: nn.Module) -> int:
    """Parameters with ``requires_grad`` (SAM3D: the decoder; a baseline: the whole network)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "SAM3D_MODEL", "ModelEntry", "build_registered", "get_model_entry", "trainable_parameters"]
