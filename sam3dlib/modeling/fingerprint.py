"""Fingerprints of module weights: a full sha256 of a state dict, and a cheap encoder hash."""
from __future__ import annotations

import hashlib

import torch


def state_digest(module: torch.nn.Module, values_per_tensor: int | None = None) -> str:
    """sha256 over a module's state dict (names and float32 values, sorted by name).

    ``values_per_tensor`` limits each tensor to its first values: a cheap fingerprint.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        values = tensor.detach().flatten()
        if values_per_tensor is not None:
            values = values[:values_per_tensor]
        digest.update(name.encode())
        digest.update(values.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def encoder_fingerprint(model) -> str:
    """A cheap hash of the encoder's weights (first values of every tensor) to detect a changed encoder."""
    return state_digest(model.encoder, values_per_tensor=4096)
