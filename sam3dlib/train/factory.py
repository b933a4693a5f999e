"""Build the model, optimizer and schedule of a config (deterministic in the config's seed)."""
from __future__ import annotations

import torch

from ..build import build_sam3d
from ..model import SAM3D


def torch_dtype(name: str) -> torch.dtype | None:
    """``float32`` -> None (no autocast), ``bfloat16`` -> torch.bfloat16."""
    return {"float32": None, "bfloat16": torch.bfloat16}[name]


def build_model(config, spec) -> SAM3D:
    """SAM3D for ``config`` on dataset ``spec``, built under ``config.seed``.

    A random encoder (no ``sam_checkpoint``) is therefore the same in training, in the
    feature cache and when a run is reloaded for prediction. The caller's RNG is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_sam3d(
            num_classes=spec.num_classes,
            in_channels=spec.num_channels,
            image_size=tuple(config.patch_size[1:]),
            encoder=config.encoder,
            checkpoint=config.sam_checkpoint,
            skip=config.skip,
            deep_supervision=config.deep_supervision,
            encoder_dtype=torch_dtype(config.encoder_dtype),
            encoder_chunk_size=config.encoder_chunk_size,
            fast_attention=config.fast_attention,
        )


def make_optimizer(config, params) -> torch.optim.Optimizer:
    """nnU-Net's SGD (the paper's: lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5).

    ``optimizer="adamw"`` (same lr/weight-decay settings) is offered for few-minute CPU runs
    such as ``make demo``, where SGD with momentum 0.99 has not left the all-background
    solution yet; it is not the paper's setting.
    """
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)


def poly_lr(config, epoch: int) -> float:
    """``lr0 * (1 - epoch / epochs) ** power`` (set before epoch 0 and after each epoch with ep + 1)."""
    return config.lr * (1 - epoch / config.epochs) ** config.poly_power
