"""Segment-Anything ViT image encoders: their numbers, their builder and their weight files.

The numbers are those of segment-anything's ``build_sam_vit_{b,l,h}``; :data:`VIT_TINY` is a
two-block, randomly initialised stand-in of ours for fast tests only (no official weights exist
for it). The encoder is built at its input size (the crop size times the encoder input scale;
the paper: the crop size) and official weights are resized to it, as the paper's code does
(docs/REFERENCE.md, "Encoder input and weights"):

* ``pos_embed`` (1 x 64 x 64 x E) is interpolated bilinearly (``align_corners=False``) to
  ``(H/16, W/16)``;
* in the global-attention blocks, ``rel_pos_h``/``rel_pos_w`` ((2*64-1) x head_dim) are
  interpolated along their length to ``2*H/16-1`` / ``2*W/16-1``. Windowed blocks keep their
  27-entry tables (window 14 is unchanged).

An official file (``sam_vit_b_01ec64.pth`` ...) is a plain state dict of the whole SAM model;
the encoder's tensors are under ``image_encoder.*``. MedSAM's ViT-B file has the same keys.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT

from sam3dlib.modeling.constants import EMBED_CHANNELS, PATCH_SIZE, RANDOM_WEIGHTS, SAM_IMAGE_SIZE
from sam3dlib.modeling.fast_attention import enable_fast_attention
from sam3dlib.modeling.weights_file import (
    ENCODER_PREFIX,
    CheckpointError,
    file_digests,
    file_sha256,
    image_encoder_state,
)
from sam3dlib.utils.fileio import atomic_torch_save


@dataclass(frozen=True)
class ViTConfig:
    """One SAM ViT size: width, depth, heads, the global-attention blocks, the official file and its md5."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    official_file: str | None = None
    official_md5: str | None = None
    window_size: int = 14


VIT_B = ViTConfig("vit_b", 768, 12, 12, (2, 5, 8, 11), "sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8")
VIT_L = ViTConfig("vit_l", 1024, 24, 16, (5, 11, 17, 23), "sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c")
VIT_H = ViTConfig("vit_h", 1280, 32, 16, (7, 15, 23, 31), "sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6")
#: Not a SAM model: a tiny random ViT so that tests run in seconds on a CPU.
VIT_TINY = ViTConfig("vit_tiny", 64, 2, 2, (1,))
#: Every size above, to name what a weights file holds in error messages.
KNOWN_SIZES = (VIT_B, VIT_L, VIT_H, VIT_TINY)
#: Official file names and their md5 (the 6 hex characters in each name are its first 6), by size name.
OFFICIAL_CHECKPOINTS = {c.name: c.official_file for c in KNOWN_SIZES if c.official_file}
OFFICIAL_MD5 = {c.name: c.official_md5 for c in KNOWN_SIZES if c.official_md5}
#: Where Segment Anything publishes them (its README's model checkpoints).
OFFICIAL_URL_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"


def build_vit(cfg: ViTConfig, image_size: tuple[int, int]) -> ImageEncoderViT:
    """segment-anything's ``ImageEncoderViT`` of size ``cfg`` for slices of ``image_size`` pixels.

    SAM's class takes one ``img_size``; for non-square slices the position embedding is
    re-created at ``(H/16, W/16)`` and the global blocks' relative-position tables at
    ``2*H/16-1`` and ``2*W/16-1``. Randomly initialised. The size is checked by the registry
    (:func:`sam3dlib.modeling.encoders.encoder_input_size`: positive multiples of 16).
    """
    h, w = (int(s) for s in image_size)
    vit = ImageEncoderViT(
        depth=cfg.depth,
        embed_dim=cfg.embed_dim,
        img_size=h,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=cfg.num_heads,
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=cfg.global_attn_indexes,
        window_size=cfg.window_size,
        out_chans=EMBED_CHANNELS,
    )
    if w != h:
        _make_non_square(vit, cfg, h // PATCH_SIZE, w // PATCH_SIZE)
    return vit


def _make_non_square(vit: ImageEncoderViT, cfg: ViTConfig, th: int, tw: int) -> None:
    vit.pos_embed = torch.nn.Parameter(torch.zeros(1, th, tw, cfg.embed_dim))
    head_dim = cfg.embed_dim // cfg.num_heads
    for i in cfg.global_attn_indexes:
        attn = vit.blocks[i].attn
        attn.rel_pos_h = torch.nn.Parameter(torch.zeros(2 * th - 1, head_dim))
        attn.rel_pos_w = torch.nn.Parameter(torch.zeros(2 * tw - 1, head_dim))


def _size_of(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    width = state["patch_embed.proj.weight"].shape[0]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    return width, depth


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


def load_vit_state(path: str | os.PathLike, cfg: ViTConfig, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The ``image_encoder`` weights of a SAM file, resized to ``image_size`` (see the module docstring).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: unreadable, holds no SAM image encoder, or one of another ViT size than ``cfg``.
    """
    state = image_encoder_state(path, "SAM image encoder", ("patch_embed.proj.weight", "pos_embed"))
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise CheckpointError(f"{path}: the image encoder lacks patch_embed.proj.weight or pos_embed")
    width, depth = _size_of(state)
    if (width, depth) != (cfg.embed_dim, cfg.depth):
        found = next((c.name for c in KNOWN_SIZES if (c.embed_dim, c.depth) == (width, depth)), "unknown")
        raise CheckpointError(
            f"{path}: holds a {found} image encoder (width {width}, {depth} blocks), "
            f"but encoder={cfg.name!r} (width {cfg.embed_dim}, {cfg.depth} blocks) was requested"
        )
    th, tw = image_size[0] // PATCH_SIZE, image_size[1] // PATCH_SIZE
    state["pos_embed"] = _resize_pos_embed(state["pos_embed"], (th, tw))
    for i in cfg.global_attn_indexes:
        for axis, tokens in (("h", th), ("w", tw)):
            key = f"blocks.{i}.attn.rel_pos_{axis}"
            if key not in state:
                raise CheckpointError(f"{path}: missing {ENCODER_PREFIX}{key}")
            state[key] = _resize_rel_pos(state[key], 2 * tokens - 1)
    return state


def official_identity(path: str | os.PathLike) -> str | None:
    """Which official SAM checkpoint ``path`` is, verified by md5 when its file name is an official one.

    Returns:
        e.g. ``"official SAM ViT-B checkpoint sam_vit_b_01ec64.pth (md5 01ec64d29a2f... verified)"``;
        None when the file has another name (MedSAM's, a user's file: not verified).

    Raises:
        CheckpointError: an official file name whose md5 differs from the official one (a partial
            or corrupted download, or another file under that name).
    """
    name = Path(path).name
    cfg = next((c for c in KNOWN_SIZES if c.official_file == name), None)
    if cfg is None:
        return None
    md5 = file_digests(path)["md5"]
    if md5 != cfg.official_md5:
        raise CheckpointError(f"{path}: md5 {md5} is not that of the official {name} ({cfg.official_md5}); the "
                              f"file is incomplete or another one: sam3d download sam-{cfg.name.replace('_', '-')} "
                              "fetches and verifies it")
    return f"official SAM ViT-{cfg.name[-1].upper()} checkpoint {name} (md5 {md5[:12]}... verified)"


def load_vit_weights(vit: ImageEncoderViT, path: str | os.PathLike, cfg: ViTConfig,
                     image_size: tuple[int, int]) -> str:
    """Load a SAM/MedSAM file's image encoder into ``vit`` (resized); return the file's sha256.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, not a SAM checkpoint, another ViT size, or tensors that do not fit.
    """
    official_identity(path)  # an official file name must hold the official file (md5)
    state = load_vit_state(path, cfg, image_size)
    try:
        result = vit.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch; PyTorch lists each tensor on its own line
        details = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
        raise CheckpointError(f"{path}: image encoder tensors do not fit {cfg.name}: {details}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: image encoder keys do not match segment-anything's {cfg.name}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return file_sha256(path)


@dataclass(frozen=True)
class SamViT:
    """The registry builder of one SAM ViT size (as segment-anything's ``build_sam_vit_b`` ...).

    Called as ``builder(input_hw, weights, fast_attention)`` with ``weights`` a file, or None /
    ``"random"`` (randomly initialised: no official file is bundled); returns ``(module in eval mode, source,
    sha256)``, source and sha256 None when random.
    """

    config: ViTConfig

    def __call__(self, input_hw: tuple[int, int], weights: Path | str | None,
                 fast_attention: bool = True) -> tuple[ImageEncoderViT, str | None, str | None]:
        vit = build_vit(self.config, input_hw)
        source = sha = None
        if weights is not None and weights != RANDOM_WEIGHTS:
            sha = load_vit_weights(vit, weights, self.config, input_hw)
            source = os.fspath(weights)
        if fast_attention:
            enable_fast_attention(vit)
        return vit.eval(), source, sha


def save_random_sam_file(path: str | os.PathLike, cfg: ViTConfig, seed: int = 0) -> Path:
    """Write a randomly initialised SAM model in the official file format.

    For tests and benchmarks only: the same keys, shapes and file layout as
    ``sam_vit_b_01ec64.pth``, with random weights. Sizes without an official file
    (``vit_tiny``) write only the encoder and a stand-in prompt-encoder tensor.
    """
    torch.manual_seed(seed)
    if cfg.official_file is not None:
        state = sam_model_registry[cfg.name]().state_dict()
    else:
        vit = build_vit(cfg, (SAM_IMAGE_SIZE, SAM_IMAGE_SIZE))
        state = {ENCODER_PREFIX + k: v for k, v in vit.state_dict().items()}
        state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128)
    return atomic_torch_save(path, state)
