"""Reading weight files safely: a ``.pth`` state dict (``weights_only=True``) and its sha256.

The one reader of encoder weight files (SAM / MedSAM / LiteMedSAM ``.pth``) and the error type
for files that are not usable weights (:class:`CheckpointError`, also raised for run
checkpoints). What the tensors must look like is each encoder's business
(:mod:`sam3dlib.modeling.encoders`).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

import torch

from sam3dlib.utils.errors import InputNote, MissingFileError, UserInputError

#: Prefix of the image encoder's tensors in a whole-SAM (or LiteMedSAM) state dict.
ENCODER_PREFIX = "image_encoder."
#: the prefix ``torch.nn.DataParallel`` / ``DistributedDataParallel`` put before every key of a
#: wrapped model's state dict (fine-tuning scripts often save it so)
DATA_PARALLEL_PREFIX = "module."
_ZIP_MAGIC = b"PK\x03\x04"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CheckpointError(UserInputError, ValueError):
    """A weights or checkpoint file that cannot be used (unreadable, wrong keys or shapes)."""


class CheckpointNote(InputNote):
    """A weights file read with a correction (DataParallel's ``module.`` prefix removed, an
    encoder-only file given its ``image_encoder.`` prefix); the message names the file."""


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """The sha256 of a file (hex)."""
    return file_digests(path, chunk_bytes)["sha256"]


_DIGESTS: dict[tuple[str, int, int], dict[str, str]] = {}


def file_digests(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> dict[str, str]:
    """``{"md5": ..., "sha256": ...}`` of a file in one read (remembered per path, size and mtime)."""
    st = os.stat(path)
    key = (os.fspath(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk_bytes), b""):
                md5.update(block)
                sha.update(block)
        _DIGESTS[key] = {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}
    return dict(_DIGESTS[key])


def load_problem(path: Path, exc: BaseException) -> str:
    """What is wrong with a weights file ``torch.load(weights_only=True)`` refused, in one line
    (no ANSI codes, no advice to load untrusted code): empty, incomplete (a PyTorch zip without
    its directory, which is written last), Python objects besides tensors (a pickled model or
    training state), or not a PyTorch file at all."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
    if size == 0:
        return "the file is empty (0 bytes)"
    text = _ANSI.sub("", str(exc))
    if head == _ZIP_MAGIC and ("central directory" in text or "PytorchStreamReader" in text):
        return (f"the file is incomplete or damaged ({size} bytes; a PyTorch zip archive without the directory "
                "written at its end): copy or download it again")
    if "Weights only load failed" in text and (head == _ZIP_MAGIC or head[:1] == b"\x80"):
        return ("it holds Python objects besides tensors and plain values (e.g. a whole pickled model or an "
                "optimizer class), which are not loaded because loading them can run code; save the model's "
                "state_dict() with torch.save instead")
    if head != _ZIP_MAGIC and head[:1] != b"\x80":
        return f"not a PyTorch weights file (it starts with bytes {head.hex(' ')})"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a weights file safely (``weights_only=True``) and return its state dict.

    A ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper is unwrapped; DataParallel's
    ``module.`` prefix is removed (a :class:`CheckpointNote` says so).

    Raises:
        MissingFileError: no such file.
        CheckpointError: one line saying what the file is instead (:func:`load_problem`), or not a
            dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"encoder weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code objects, random bytes...
        raise CheckpointError(f"{path}: cannot be read as weights: {load_problem(path, exc)}") from exc
    if isinstance(obj, dict) and not any(k.startswith(ENCODER_PREFIX) for k in obj):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    if obj and all(isinstance(k, str) and k.startswith(DATA_PARALLEL_PREFIX) for k in obj):
        obj = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in obj.items()}
        warnings.warn(f"{path}: every key starts with DataParallel's '{DATA_PARALLEL_PREFIX}' prefix (a model "
                      "saved while wrapped for multi-GPU training); read without it", CheckpointNote, stacklevel=2)
    return obj


def image_encoder_state(path: str | os.PathLike, what: str,
                        encoder_keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The ``image_encoder.*`` tensors of a weights file, prefix removed.

    A file holding only an image encoder (every key of ``encoder_keys`` present at the top
    level, e.g. a fine-tuned encoder's ``state_dict()``) is read as one, with a
    :class:`CheckpointNote`.

    Raises:
        CheckpointError: no image encoder there (the message names the first keys and ``what``
            was expected, e.g. "SAM image encoder").
    """
    full = read_state_dict(path)
    state = {k[len(ENCODER_PREFIX):]: v for k, v in full.items() if k.startswith(ENCODER_PREFIX)}
    if not state and encoder_keys and all(k in full for k in encoder_keys):
        state = dict(full)
        warnings.warn(f"{path}: holds an image encoder without the '{ENCODER_PREFIX}' prefix of a whole model; "
                      "read as the image encoder", CheckpointNote, stacklevel=2)
    if not state:
        sample = ", ".join(list(full)[:3]) or "none"
        keys = f" and no encoder keys such as {encoder_keys[0]}" if encoder_keys else ""
        raise CheckpointError(f"{path}: holds no {what}: no '{ENCODER_PREFIX}*' keys (first keys: {sample}){keys}")
    return state


__all__ = ["DATA_PARALLEL_PREFIX", "ENCODER_PREFIX", "CheckpointError", "CheckpointNote", "file_digests", "file_sha256",
           "image_encoder_state", "load_problem", "read_state_dict"]
