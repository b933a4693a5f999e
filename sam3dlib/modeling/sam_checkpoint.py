"""Reading official Segment-Anything checkpoints (and MedSAM's) for the image encoder.

An official file (``sam_vit_b_01ec64.pth`` ...) is a plain state dict of the whole SAM
model; the encoder's tensors are under ``image_encoder.*``. SAM3D builds the encoder at
the training crop size, so two kinds of tensors are resized, as the authors' code does:

* ``pos_embed`` (1x64x64xE) is interpolated bilinearly (``align_corners=False``) to
  ``(H/16, W/16)``;
* in the global-attention blocks, ``rel_pos_h``/``rel_pos_w`` ((2*64-1) x head_dim) are
  interpolated along their length to ``2*H/16-1`` / ``2*W/16-1``. Windowed blocks keep
  their 27-entry tables (window 14 is unchanged).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from sam3dlib.modeling.encoders.sam_vit import ENCODER_CONFIGS, encoder_config
from sam3dlib.utils.errors import InputNote, MissingFileError, UserInputError
from sam3dlib.utils.fileio import atomic_torch_save

ENCODER_PREFIX = "image_encoder."


class CheckpointError(UserInputError, ValueError):
    """A checkpoint file that is not a usable SAM image-encoder checkpoint."""


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


def official_identity(path: str | os.PathLike) -> str | None:
    """Which official SAM checkpoint ``path`` is, verified by md5 when its file name is an official one.

    Returns:
        e.g. ``"official SAM ViT-B checkpoint sam_vit_b_01ec64.pth (md5 01ec64d29a2f... verified)"``;
        None when the file has another name (MedSAM's, a user's file: not verified).

    Raises:
        CheckpointError: an official file name whose md5 differs from the official one (a partial
            or corrupted download, or another file under that name).
    """
    from sam3dlib.modeling.encoders.sam_vit import OFFICIAL_CHECKPOINTS, OFFICIAL_MD5

    name = Path(path).name
    vit = next((k for k, v in OFFICIAL_CHECKPOINTS.items() if v == name), None)
    if vit is None:
        return None
    md5 = file_digests(path)["md5"]
    if md5 != OFFICIAL_MD5[vit]:
        raise CheckpointError(f"{path}: md5 {md5} is not that of the official {name} ({OFFICIAL_MD5[vit]}); the "
                              f"file is incomplete or another one: sam3d download sam-{vit.replace('_', '-')} "
                              "fetches and verifies it")
    return f"official SAM ViT-{vit[-1].upper()} checkpoint {name} (md5 {md5[:12]}... verified)"


class CheckpointNote(InputNote):
    """A checkpoint read with a correction (DataParallel's ``module.`` prefix removed, an
    encoder-only file given its ``image_encoder.`` prefix); the message names the file."""


#: the prefix ``torch.nn.DataParallel`` / ``DistributedDataParallel`` put before every key of a
#: wrapped model's state dict (fine-tuning scripts often save it so)
DATA_PARALLEL_PREFIX = "module."
_ZIP_MAGIC = b"PK\x03\x04"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
    """Load a checkpoint file safely (``weights_only=True``) and return its state dict.

    A state dict under ``model``/``state_dict`` is unwrapped; DataParallel's ``module.`` prefix
    is removed (a :class:`CheckpointNote` says so).

    Raises:
        MissingFileError: no such file.
        CheckpointError: one line saying what the file is instead (:func:`load_problem`).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"SAM checkpoint {path} does not exist")
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


def _official_names() -> list[str]:
    from sam3dlib.modeling.encoders.sam_vit import OFFICIAL_CHECKPOINTS

    return list(OFFICIAL_CHECKPOINTS.values())


def identify_vit(encoder_state: dict[str, torch.Tensor]) -> str | None:
    """The registry name whose width and depth match an ``image_encoder`` state dict."""
    width = encoder_state["patch_embed.proj.weight"].shape[0]
    depth = len({k.split(".")[1] for k in encoder_state if k.startswith("blocks.")})
    for name, cfg in ENCODER_CONFIGS.items():
        if cfg.embed_dim == width and cfg.depth == depth:
            return name
    return None


def _resize_pos_embed(pos: torch.Tensor, tokens: tuple[int, int]) -> torch.Tensor:
    if tuple(pos.shape[1:3]) == tokens:
        return pos
    grid = pos.permute(0, 3, 1, 2).float()  # 1 x E x 64 x 64
    grid = F.interpolate(grid, size=tokens, mode="bilinear", align_corners=False)
    return grid.permute(0, 2, 3, 1).to(pos.dtype)


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table[None, None].float(), size=(length, table.shape[1]), mode="bilinear", align_corners=False)
    return resized[0, 0].to(table.dtype)


def load_encoder_state(
    path: str | os.PathLike, encoder: str, image_size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """The ``image_encoder`` weights of a SAM checkpoint, resized to ``image_size``.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is unreadable, holds no SAM image encoder, or holds one
            of another ViT size than ``encoder``.
    """
    cfg = encoder_config(encoder)
    full = read_state_dict(path)
    state = {k[len(ENCODER_PREFIX):]: v for k, v in full.items() if k.startswith(ENCODER_PREFIX)}
    if not state and "patch_embed.proj.weight" in full and "pos_embed" in full:
        state = dict(full)  # an image encoder saved on its own (e.g. a fine-tuned encoder's state_dict())
        warnings.warn(f"{path}: holds an image encoder without the '{ENCODER_PREFIX}' prefix of a whole SAM "
                      "model; read as the image encoder", CheckpointNote, stacklevel=2)
    if not state:
        sample = ", ".join(list(full)[:3]) or "none"
        raise CheckpointError(
            f"{path}: holds no SAM image encoder: no '{ENCODER_PREFIX}*' keys (first keys: {sample}) and no "
            "encoder keys such as patch_embed.proj.weight"
        )
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise CheckpointError(f"{path}: the image encoder lacks patch_embed.proj.weight or pos_embed")
    found = identify_vit(state)
    if found != encoder:
        width = state["patch_embed.proj.weight"].shape[0]
        depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        raise CheckpointError(
            f"{path}: holds a {found or 'unknown'} image encoder (width {width}, {depth} blocks), "
            f"but encoder={encoder!r} (width {cfg.embed_dim}, {cfg.depth} blocks) was requested"
        )
    th, tw = image_size[0] // 16, image_size[1] // 16
    state["pos_embed"] = _resize_pos_embed(state["pos_embed"], (th, tw))
    for i in cfg.global_attn_indexes:
        for axis, tokens in (("h", th), ("w", tw)):
            key = f"blocks.{i}.attn.rel_pos_{axis}"
            if key not in state:
                raise CheckpointError(f"{path}: missing {ENCODER_PREFIX}{key}")
            state[key] = _resize_rel_pos(state[key], 2 * tokens - 1)
    return state


def save_random_sam_checkpoint(path: str | os.PathLike, encoder: str = "vit_b", seed: int = 0) -> Path:
    """Write a randomly initialised SAM model in the official checkpoint format.

    For tests and benchmarks only: the same keys, shapes and file layout as
    ``sam_vit_b_01ec64.pth``, with random weights. ``vit_tiny`` writes only the encoder
    and a stand-in prompt-encoder tensor (segment-anything has no such model).
    """
    from segment_anything import sam_model_registry

    from sam3dlib.modeling.encoders.sam_vit import build_image_encoder

    torch.manual_seed(seed)
    if encoder in sam_model_registry and encoder != "vit_tiny":
        state = sam_model_registry[encoder]().state_dict()
    else:
        vit = build_image_encoder(encoder, (1024, 1024))
        state = {ENCODER_PREFIX + k: v for k, v in vit.state_dict().items()}
        state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128)
    return atomic_torch_save(path, state)
