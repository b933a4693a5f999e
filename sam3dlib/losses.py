"""Soft Dice + cross-entropy (paper eq. 2) and the deep-supervision wrapper.

The paper prints a squared-denominator Dice; the code that produced its numbers
(nnU-Net v1's ``DC_and_CE_loss``) uses the plain soft Dice
``(2TP + eps) / (2TP + FP + FN + eps)`` over foreground classes, summed 1:1 with CE.
We follow the code by default; ``squared=True`` selects the printed form.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .constants import DEEP_SUPERVISION_WEIGHTS


def soft_dice(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    batch_dice: bool = False,
    squared: bool = False,
    include_background: bool = False,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Mean soft Dice of ``B x K x ...`` probabilities against a one-hot target."""
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    axes = [0] + list(range(2, probs.ndim)) if batch_dice else list(range(2, probs.ndim))
    inter = (probs * onehot).sum(axes)
    if squared:
        denom = (probs * probs).sum(axes) + (onehot * onehot).sum(axes)
    else:
        denom = probs.sum(axes) + onehot.sum(axes)
    return ((2 * inter + smooth) / (denom + smooth)).mean()


class DiceCELoss(nn.Module):
    """``CE + (1 - soft Dice)`` for logits ``B x K x D x H x W`` and integer targets.

    Args:
        batch_dice (bool): Dice over the whole batch as one volume (nnU-Net's 2-stage plans).
        squared (bool): the paper's printed squared-denominator Dice instead of the code's.
    """

    def __init__(self, batch_dice: bool = False, squared: bool = False) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.squared = squared

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _as_index_target(target, logits)
        ce = F.cross_entropy(logits, target)
        probs = torch.softmax(logits.float(), dim=1)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
        return ce + 1.0 - soft_dice(probs, onehot, self.batch_dice, self.squared)


def _as_index_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return target.long()


def deep_supervision_weights(n: int, base: Sequence[float] = DEEP_SUPERVISION_WEIGHTS) -> list[float]:
    """Weights 1, 1/2, 1/4 ... normalised to sum to 1 (paper section 2)."""
    w = list(base[:n])
    total = sum(w)
    return [x / total for x in w]


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer ``B x D x H x W`` label map to ``size`` (D, H, W)."""
    if tuple(target.shape[-3:]) == tuple(size):
        return target
    return F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` at every decoder output with normalised weights 1, 1/2, 1/4.

    The target is downsampled (nearest) to each output's resolution.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        if target.ndim == outputs[0].ndim:
            target = target[:, 0]
        weights = deep_supervision_weights(len(outputs))
        return sum(w * self.loss(o, downsample_target(target, o.shape[2:])) for w, o in zip(weights, outputs))


def sam3d_loss(batch_dice: bool = False, squared: bool = False) -> DeepSupervisionLoss:
    """The paper's training objective: deep-supervised Dice + CE."""
    return DeepSupervisionLoss(DiceCELoss(batch_dice=batch_dice, squared=squared))
