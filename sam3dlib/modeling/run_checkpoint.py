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

from sam3dlib.modeling.weights_file import CheckpointError, load_problem
from sam3dlib.utils.errors import MissingFileError
from sam3dlib.utils.fileio import atomic_torch_save
from sam3dlib.utils.version import package_version

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
    payload = {"format": CHECKPOINT_FORMAT, "sam3dlib_version": package_version(), "rng": rng_state(), **state}
    return atomic_torch_save(path, payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` loading)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a sam3dlib training checkpoint: {load_problem(path, exc)}") from exc
    if not isinstance(state, dict) or "decoder" not in state or "format" not in state:
        keys = ", ".join(map(str, list(state)[:4])) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a sam3dlib training checkpoint (no 'format' and 'decoder' entries; "
                              f"it holds {keys or 'nothing'})")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: a sam3dlib training checkpoint of format {state['format']!r} (written by sam3dlib "
            f"{state.get('sam3dlib_version', 'of an unrecorded version')}); sam3dlib {package_version()} reads "
            f"format {CHECKPOINT_FORMAT}: use the sam3dlib version that wrote it")
    return state
