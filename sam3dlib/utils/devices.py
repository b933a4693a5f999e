"""Device names: one rule that turns ``auto``/``cpu``/``cuda``/``cuda:N`` into a torch device."""
from __future__ import annotations

import torch


def resolve_device(device: str, local_rank: int | None = None) -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; under DDP the rank's own GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use --set device=cpu")
        return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    if device != "cpu":
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device("cpu")
