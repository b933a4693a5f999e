"""Training checkpoints: decoder, optimizer, epoch, RNG states, best metric, log history.

Only the decoder is stored; the frozen encoder is rebuilt from the config (checkpoint
path + sha256, or the seeded random initialisation). Files are written atomically.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam3dlib.modeling.weights_file import CheckpointError
from sam3dlib.utils.errors import MissingFileError
from sam3dlib.utils.fileio import atomic_torch_save

CHECKPOINT_FORMAT = 1
LATEST = "latest.pt"
BEST = "best.pt"


def rng_state() -> dict[str, Any]:
    """torch / CUDA / numpy / python RNG states as plain types (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **state: Any) -> Path:
    """Write ``state`` (plus the format version and RNG states) atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "rng": rng_state(), **state}
    return atomic_torch_save(path, payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` loading)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a sam3dlib training checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "decoder" not in state:
        raise CheckpointError(f"{path}: not a sam3dlib training checkpoint (format {CHECKPOINT_FORMAT})")
    return state
