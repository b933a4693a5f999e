"""One decoder update and the online validation: what the trainer runs per batch.

:func:`decoder_update` is the only training step of the package: the :class:`~sam3dlib.training.trainer.Trainer`
calls it on every batch and ``benchmarks/bench_lib.py`` times it, so the benchmark measures
the step that trains (same autocast, loss precision, clipping and optimizer update).
"""
from __future__ import annotations

import torch

from sam3dlib.modeling.factory import torch_dtype
from sam3dlib.modeling.losses import DeepSupervisionLoss, sam3d_loss
from sam3dlib.modeling.sam3d import autocast_context
from sam3dlib.training.distributed import DistContext


def make_loss(config, one_hot: bool = False) -> DeepSupervisionLoss:
    """The config's deep-supervised Dice + CE (``batch_dice``, ``squared_dice``).

    ``one_hot=True`` gives nnU-Net's one-hot form of the same loss (the benchmark's "paper"
    variant); training uses the form from labels.
    """
    return sam3d_loss(batch_dice=config.batch_dice, squared=config.squared_dice, one_hot=one_hot)


def decoder_update(net: torch.nn.Module, features: torch.Tensor, target: torch.Tensor,
                   optimizer: torch.optim.Optimizer, loss_fn: torch.nn.Module, grad_clip: float,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """One optimizer step of the decoder on encoder features (nnU-Net v1's ``run_iteration``).

    The forward runs under ``dtype`` autocast (None: float32), the outputs are cast to float32
    before the loss, the gradients' global L2 norm is clipped to ``grad_clip`` (nnU-Net: 12)
    over ``net``'s parameters, then the optimizer steps.

    Args:
        net: the decoder, or its ``DistributedDataParallel`` wrapper.
        features: ``B x (C*256) x D x H/16 x W/16`` on the decoder's device.
        target: ``B x D x H x W`` int64 labels on the same device.
        optimizer: over ``net``'s parameters.
        loss_fn: e.g. :func:`make_loss` (takes the output list of deep supervision).
        grad_clip: ``config.grad_clip``.
        dtype: autocast dtype, ``torch_dtype(config.decoder_dtype)``.

    Returns:
        The loss (a 0-d tensor with its graph released by ``backward``).
    """
    with autocast_context(features.device.type, dtype):
        out = net(features)
    out = [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()
    loss = loss_fn(out, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    return loss


@torch.no_grad()
def validate(decoder: torch.nn.Module, batches, regions: dict[str, tuple[int, ...]], device: torch.device,
             decoder_dtype: str = "float32", ctx: DistContext | None = None) -> tuple[float, dict[str, float]]:
    """nnU-Net's online "global foreground Dice" on un-augmented patches.

    TP/FP/FN are summed over all batches (and ranks) per scored region, Dice is computed per
    region (regions with no voxel in prediction and target are left out), then averaged.

    Args:
        decoder: the decoder (switched to eval mode by the caller).
        batches: ``(features, label)`` pairs: ``B x (C*256) x D x h x w`` on the decoder's
            device and ``B x D x H x W`` int64 labels on the CPU.
        regions: scored region name -> labels it unites (``DatasetSpec.regions``).
        device: the decoder's device (the sums are reduced there under DDP).
        decoder_dtype: ``float32`` or ``bfloat16`` autocast.
        ctx: the ranks to sum over; None for one process.

    Returns:
        (mean Dice, {region: Dice}); mean 0.0 when no region has a voxel anywhere.
    """
    stats = torch.zeros(3, len(regions), dtype=torch.float64)
    for feats, target in batches:
        with autocast_context(device.type, torch_dtype(decoder_dtype)):
            logits = decoder(feats)
        pred = logits.argmax(1).cpu()
        for r, labels in enumerate(regions.values()):
            lab = torch.tensor(labels)
            p, g = torch.isin(pred, lab), torch.isin(target, lab)
            stats[0, r] += (p & g).sum()
            stats[1, r] += (p & ~g).sum()
            stats[2, r] += (~p & g).sum()
    if ctx is not None:
        stats = ctx.all_reduce_sum(stats.to(device)).cpu()
    tp, fp, fn = stats
    denom = 2 * tp + fp + fn
    dice = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))
    per_region = {name: float(d) for name, d in zip(regions, dice)}
    valid = dice[~torch.isnan(dice)]
    return (float(valid.mean()) if len(valid) else 0.0), per_region
