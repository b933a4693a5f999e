"""The optimizer of a config (the paper's SGD) and its poly learning-rate schedule."""
from __future__ import annotations

import torch


def make_optimizer(config, params) -> torch.optim.Optimizer:
    """nnU-Net's SGD: lr 1e-2, momentum 0.99, weight decay 3e-5 (the paper, Section 3B); Nesterov
    momentum (the authors' code, nnU-Net v1's trainer: the paper does not say).

    ``optimizer="adamw"`` (same lr/weight-decay settings) is offered for few-minute CPU runs
    such as ``make demo``, where SGD with momentum 0.99 has not left the all-background
    solution yet; it is not the paper's setting.
    """
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)


def poly_decay(lr0: float, done: int, total: int, power: float = 0.9) -> float:
    """nnU-Net's poly schedule: ``lr0 * (1 - done / total) ** power`` after ``done`` of ``total`` epochs or steps."""
    return lr0 * (1 - done / total) ** power


def _budget_poly(config, done: float, seconds: float) -> float:
    """:func:`poly_decay` at fraction ``done``, or at ``seconds / time_budget_s`` when that is larger."""
    if config.time_budget_s:
        done = max(done, seconds / config.time_budget_s)
    return poly_decay(config.lr, min(done, 1.0), 1.0, config.poly_power)


def poly_lr(config, epoch: int, seconds: float = 0.0) -> float:
    """:func:`poly_decay` of a config (set before epoch 0 and after each epoch with ep + 1).

    With ``config.time_budget_s`` the schedule runs on whichever ends first, the epochs or the
    budget (as :func:`poly_step_lr`); ``seconds``: training seconds so far.
    """
    return _budget_poly(config, epoch / config.epochs, seconds)


def poly_step_lr(config, step: int, seconds: float = 0.0) -> float:
    """:func:`poly_decay` over optimizer steps (``config.poly_per_step``): the rate for step ``step``
    (0-based) of ``epochs * iterations_per_epoch``.

    With ``config.time_budget_s`` the schedule runs on whichever ends first, the steps or the
    budget: the fraction done is the larger of ``step / steps`` and ``seconds / time_budget_s``
    (``seconds``: training seconds so far), so a run stopped by its budget has decayed its rate
    as one that ran its steps (a fair equal-budget comparison).
    """
    return _budget_poly(config, step / (config.epochs * config.iterations_per_epoch), seconds)
