"""Dice + CE loss and deep-supervision weighting."""
from __future__ import annotations

import pytest
import torch

from sam3dlib.modeling.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    OneHotDiceCELoss,
    deep_supervision_weights,
    downsample_target,
    sam3d_loss,
)


def _onehot_logits(target: torch.Tensor, k: int, scale: float = 10.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(target, k).movedim(-1, 1).float() * scale


def test_correct_prediction_has_lower_loss_than_wrong():
    target = torch.randint(0, 3, (2, 4, 8, 8))
    loss = DiceCELoss()
    good = loss(_onehot_logits(target, 3), target)
    bad = loss(_onehot_logits((target + 1) % 3, 3), target)
    assert good < 0.05 < bad


@pytest.mark.parametrize("batch_dice,squared", [(False, False), (True, False), (False, True)])
def test_perfect_prediction_loss_near_zero(batch_dice, squared):
    target = torch.randint(0, 4, (2, 2, 8, 8))
    assert DiceCELoss(batch_dice, squared)(_onehot_logits(target, 4, 50.0), target) < 1e-3


def test_deep_supervision_weights_are_normalised_halvings():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_deep_supervision_loss_is_weighted_sum_over_downsampled_targets():
    target = torch.randint(0, 3, (1, 2, 16, 16))
    outs = [torch.randn(1, 3, 2, 16, 16), torch.randn(1, 3, 2, 8, 8), torch.randn(1, 3, 2, 4, 4)]
    base = DiceCELoss()
    expected = sum(
        w * base(o, downsample_target(target, o.shape[2:])) for w, o in zip([4 / 7, 2 / 7, 1 / 7], outs)
    )
    torch.testing.assert_close(DeepSupervisionLoss(base)(outs, target), expected)
    torch.testing.assert_close(sam3d_loss()(outs, target[:, None]), expected)


def test_downsample_target_is_nearest_in_plane_only():
    target = torch.arange(16).view(1, 1, 4, 4).repeat(1, 2, 1, 1)
    small = downsample_target(target, (2, 2, 2))
    assert small.shape == (1, 2, 2, 2)
    assert set(small.unique().tolist()) <= set(target.unique().tolist())


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="does not match logits"):
        DiceCELoss()(torch.randn(1, 3, 2, 8, 8), torch.zeros(1, 2, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("batch_dice,squared", [(False, False), (True, False), (False, True), (True, True)])
def test_loss_equals_one_hot_form_with_gradients(batch_dice, squared):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (2, 3, 6, 7))
    target[1] = 0  # a sample without foreground: its Dice terms are smooth / smooth
    ours = DiceCELoss(batch_dice, squared)(logits, target)
    (grad,) = torch.autograd.grad(ours, logits)
    ref = OneHotDiceCELoss(batch_dice, squared)(logits, target)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
