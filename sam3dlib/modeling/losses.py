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

from sam3dlib.modeling.constants import DEEP_SUPERVISION_WEIGHTS

DICE_SMOOTH = 1e-5


def dice_statistics(probs: torch.Tensor, target: torch.Tensor, squared: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-class soft-Dice terms ``(TP, denominator)``, each ``B x K``.

    Equal to the one-hot form ``sum(p * onehot)`` and ``sum(p) + sum(onehot)`` (or the squared
    ``sum(p^2) + sum(onehot^2)``) without building the ``B x K x ...`` one-hot tensor: TP is
    each voxel's probability of its own class summed per class (a scatter-add), and a one-hot
    sum is a class count. At Synapse's crop that saves two full-resolution float tensors per
    output and their passes forward and backward.
    """
    b, k = probs.shape[:2]
    flat_target = target.reshape(b, -1)
    own_class = probs.gather(1, target[:, None]).reshape(b, -1)
    tp = probs.new_zeros(b, k).scatter_add_(1, flat_target, own_class)
    counts = probs.new_zeros(b, k).scatter_add_(1, flat_target, probs.new_ones(()).expand_as(own_class))
    spatial = list(range(2, probs.ndim))
    mass = (probs * probs).sum(spatial) if squared else probs.sum(spatial)
    return tp, mass + counts


def soft_dice(
    probs: torch.Tensor,
    target: torch.Tensor,
    batch_dice: bool = False,
    squared: bool = False,
    include_background: bool = False,
    smooth: float = DICE_SMOOTH,
) -> torch.Tensor:
    """Mean soft Dice of ``B x K x ...`` probabilities against integer labels ``B x ...``."""
    tp, denom = dice_statistics(probs, target, squared)
    if batch_dice:
        tp, denom = tp.sum(0), denom.sum(0)
    if not include_background:
        tp, denom = tp[..., 1:], denom[..., 1:]
    return ((2 * tp + smooth) / (denom + smooth)).mean()


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
        log_probs = F.log_softmax(_at_least_float32(logits), dim=1)
        ce = F.nll_loss(log_probs, target)
        return ce + 1.0 - soft_dice(log_probs.exp(), target, self.batch_dice, self.squared)


class OneHotDiceCELoss(DiceCELoss):
    """:class:`DiceCELoss` in nnU-Net's one-hot form, as the authors' code computes it.

    Kept as the reference the label form is tested against (``tests/test_losses.py``) and as
    the benchmark's baseline; it builds two ``B x K x ...`` float tensors per call.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _as_index_target(target, logits)
        logits = _at_least_float32(logits)
        probs = torch.softmax(logits, dim=1)[:, 1:]
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(probs.dtype)[:, 1:]
        axes = [0, *range(2, probs.ndim)] if self.batch_dice else list(range(2, probs.ndim))
        tp = (probs * onehot).sum(axes)
        mass = probs * probs + onehot * onehot if self.squared else probs + onehot
        dice = ((2 * tp + DICE_SMOOTH) / (mass.sum(axes) + DICE_SMOOTH)).mean()
        return F.cross_entropy(logits, target) + 1.0 - dice


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits (autocast) are upcast; float64 stays float64 (exactness tests)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


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


def sam3d_loss(batch_dice: bool = False, squared: bool = False, one_hot: bool = False) -> DeepSupervisionLoss:
    """The paper's training objective: deep-supervised Dice + CE (``one_hot``: nnU-Net's form)."""
    loss = OneHotDiceCELoss if one_hot else DiceCELoss
    return DeepSupervisionLoss(loss(batch_dice=batch_dice, squared=squared))
