"""Reading weight files safely: a ``.pth`` state dict (``weights_only=True``) and its sha256.

The one reader of encoder weight files (SAM / MedSAM / LiteMedSAM ``.pth``) and the error type
for files that are not usable weights (:class:`CheckpointError`, also raised for run
checkpoints). What the tensors must look like is each encoder's business
(:mod:`sam3dlib.modeling.encoders`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from sam3dlib.utils.errors import MissingFileError, UserInputError

#: Prefix of the image encoder's tensors in a whole-SAM (or LiteMedSAM) state dict.
ENCODER_PREFIX = "image_encoder."


class CheckpointError(UserInputError, ValueError):
    """A weights or checkpoint file that cannot be used (unreadable, wrong keys or shapes)."""


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike, hint: str = "") -> dict[str, torch.Tensor]:
    """Load a weights file safely (``weights_only=True``) and return its state dict.

    A ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper is unwrapped. ``hint`` is appended to
    the message of an unreadable file (e.g. the official file names).

    Raises:
        MissingFileError: no such file.
        CheckpointError: unreadable (truncated, pickled code, not PyTorch), or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"encoder weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code objects, random bytes...
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch weights file ({type(exc).__name__}: {exc}). "
            f"Is the download complete?{hint}"
        ) from exc
    if isinstance(obj, dict) and not any(k.startswith(ENCODER_PREFIX) for k in obj):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    return obj


def image_encoder_state(path: str | os.PathLike, what: str, hint: str = "") -> dict[str, torch.Tensor]:
    """The ``image_encoder.*`` tensors of a weights file, prefix removed.

    Raises:
        CheckpointError: none there (the message names the first keys and says the file is not
            ``what``, e.g. "a Segment-Anything checkpoint").
    """
    full = read_state_dict(path, hint)
    state = {k[len(ENCODER_PREFIX):]: v for k, v in full.items() if k.startswith(ENCODER_PREFIX)}
    if not state:
        sample = ", ".join(list(full)[:3]) or "none"
        raise CheckpointError(f"{path}: no '{ENCODER_PREFIX}*' tensors (first keys: {sample}); this is not {what}")
    return state


__all__ = ["ENCODER_PREFIX", "CheckpointError", "file_sha256", "image_encoder_state", "read_state_dict"]
