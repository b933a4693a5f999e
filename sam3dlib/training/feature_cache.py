"""The on-disk float16 store of frozen-encoder features behind cached mode
(:class:`~sam3dlib.training.feature_source.CachedFeatures` builds and reads it).

The SAM encoder is built at the crop's in-plane size (H, W) and its position embeddings
depend on that size, so the features of a crop can only be reproduced by encoding exactly
that crop. Each case is therefore stored as in-plane **tiles** of the crop size on a grid
(stride ``cache_stride``, default half the crop; the last tile is flush with the border;
a volume smaller than the crop is zero-padded at the far side), every slice of every tile:

```
<cache_dir>/<encoder>-<settings hash>/<case_id>.npy    float16 n_tiles x (C*256) x D x h x w (the encoder grid)
<cache_dir>/<encoder>-<settings hash>/<case_id>.json   key, tile origins, padded shape
<cache_dir>/<encoder>-<settings hash>/_zero_slice.npy  features of an all-zero slice (z padding)
```

Slices are encoded independently, so any z range of a tile is exactly what the online
encoder would give for that crop (up to float16 storage). Every entry carries a sha256 key
over (case id, the store image file's size and mtime, encoder name, checkpoint sha256 or
"random init" + seed, crop H/W, tile stride, encoder dtype, cache format version); an entry
whose key differs is rebuilt, never reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm  # text bars: no widgets (they need a widget-aware front end)

from sam3dlib.modeling.sam3d import SAM3D
from sam3dlib.utils.errors import ConfigError
from sam3dlib.utils.fileio import atomic_save_npy, atomic_write_json, remove_stale_temps

CACHE_FORMAT_VERSION = 1
#: a temporary file this old was left by a killed writer (younger ones may belong to a job sharing the cache)
STALE_TEMP_S = 3600.0
ZERO_SLICE = "_zero_slice.npy"


def tile_origins(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of tiles of length ``crop`` over ``size`` (last one flush with the end)."""
    if stride < 1:
        raise ConfigError(f"tile stride must be >= 1, got {stride}")
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop + 1, stride))
    if starts[-1] != size - crop:
        starts.append(size - crop)
    return starts


@dataclass(frozen=True)
class CacheSettings:
    """What the cached features depend on besides the case itself."""

    encoder: str
    encoder_source: str  # checkpoint sha256, or "random init (seed N)"
    crop_hw: tuple[int, int]
    stride_hw: tuple[int, int]
    encoder_dtype: str
    in_channels: int
    format_version: int = CACHE_FORMAT_VERSION
    encoder_input_hw: tuple[int, int] | None = None  # None: the crop size (encoder input scale 1)
    embedding_pool: int = 1

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One case in the store: features (memory-mapped), tile origins and padded shape."""

    case_id: str
    features: np.ndarray  # float16 n_tiles x (C*256) x D x h x w, mmap
    tiles: list[tuple[int, int]]  # (y0, x0) per tile, on the padded grid
    padded_hw: tuple[int, int]
    depth: int


class FeatureCache:
    """The feature store of one encoder setting.

    Args:
        cache_dir: root folder (several settings can share it; each gets a sub-folder).
        settings: encoder, checkpoint, crop and stride the features depend on.
    """

    def __init__(self, cache_dir: str | os.PathLike, settings: CacheSettings) -> None:
        self.settings = settings
        self.root = Path(cache_dir) / f"{settings.encoder}-{settings.digest()[:16]}"
        self._entries: dict[str, CacheEntry] = {}
        self._zero: np.ndarray | None = None

    # ------------------------------------------------------------------ keys
    def case_key(self, case_id: str, image_path: str | os.PathLike) -> str:
        st = Path(image_path).stat()
        payload = {"case_id": case_id, "image_size": st.st_size, "image_mtime_ns": st.st_mtime_ns,
                   **asdict(self.settings)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _paths(self, case_id: str) -> tuple[Path, Path]:
        return self.root / f"{case_id}.npy", self.root / f"{case_id}.json"

    def is_current(self, case_id: str, image_path: str | os.PathLike) -> bool:
        npy, meta = self._paths(case_id)
        if not (npy.is_file() and meta.is_file()):
            return False
        try:
            return json.loads(meta.read_text()).get("key") == self.case_key(case_id, image_path)
        except (OSError, json.JSONDecodeError):
            return False

    # ------------------------------------------------------------------ building
    def tiles_for(self, hw: Sequence[int]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        (ch, cw), (sh, sw) = self.settings.crop_hw, self.settings.stride_hw
        ph, pw = max(int(hw[0]), ch), max(int(hw[1]), cw)
        return [(y, x) for y in tile_origins(ph, ch, sh) for x in tile_origins(pw, cw, sw)], (ph, pw)

    def build_case(self, case_id: str, image: np.ndarray, image_path: str | os.PathLike, model: SAM3D,
                   device: torch.device | str = "cpu") -> None:
        """Encode every tile of one case ``C x D x H x W`` and write it atomically."""
        c, d, h, w = image.shape
        if c != self.settings.in_channels:
            raise ValueError(f"case {case_id}: {c} channels, the cache expects {self.settings.in_channels}")
        tiles, (ph, pw) = self.tiles_for((h, w))
        ch, cw = self.settings.crop_hw
        th, tw = model.embedding_hw
        self.root.mkdir(parents=True, exist_ok=True)
        npy, meta = self._paths(case_id)
        feats = np.empty((len(tiles), c * model.encoder_spec.channels, d, th, tw), dtype=np.float16)
        padded = np.zeros((c, d, ph, pw), np.float32)
        padded[:, :, :h, :w] = image
        for i, (y, x) in enumerate(tiles):
            crop = torch.from_numpy(np.ascontiguousarray(padded[None, :, :, y:y + ch, x:x + cw])).to(device)
            out = model.encode(crop)
            feats[i] = out[0].cpu().numpy().astype(np.float16)
        atomic_save_npy(npy, feats)
        atomic_write_json(meta, {"key": self.case_key(case_id, image_path), "case_id": case_id,
                                 "tiles": tiles, "padded_hw": [ph, pw], "depth": d, "shape": list(feats.shape),
                                 "settings": asdict(self.settings)})
        self._entries.pop(case_id, None)

    def build_zero_slice(self, model: SAM3D, device: torch.device | str = "cpu") -> None:
        path = self.root / ZERO_SLICE
        if path.is_file():
            return
        ch, cw = self.settings.crop_hw
        zero = torch.zeros(1, self.settings.in_channels, 1, ch, cw, device=device)
        out = model.encode(zero)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(path, out[0, :, 0].cpu().numpy().astype(np.float16))

    def build(self, store, case_ids: Sequence[str], model: SAM3D, device: torch.device | str = "cpu",
              rank: int = 0, world_size: int = 1, progress: bool = True) -> list[str]:
        """Encode the cases of ``case_ids`` that are missing or stale; rank r does cases i % world == r.

        Returns the case ids this rank (re)built. Call a barrier afterwards under DDP.
        """
        from sam3dlib.data.store import case_paths

        if world_size == 1:  # temp files of a killed build; another job (another seed) may be writing now
            remove_stale_temps(self.root, older_than_s=STALE_TEMP_S)
        mine = [cid for i, cid in enumerate(case_ids) if i % world_size == rank]
        todo = [cid for cid in mine if not self.is_current(cid, case_paths(store.root, cid)["image"])]
        if rank == 0:
            self.build_zero_slice(model, device)
        for cid in tqdm(todo, desc=f"encode cases ({self.settings.encoder})", disable=not progress or not todo):
            self.build_case(cid, np.asarray(store.image(cid)), case_paths(store.root, cid)["image"], model, device)
        return todo

    # ------------------------------------------------------------------ reading
    def entry(self, case_id: str) -> CacheEntry:
        if case_id not in self._entries:
            npy, meta_path = self._paths(case_id)
            if not meta_path.is_file():
                raise FileNotFoundError(f"{meta_path}: case {case_id} is not in the feature cache {self.root}")
            meta = json.loads(meta_path.read_text())
            if meta.get("settings") != json.loads(json.dumps(asdict(self.settings))):
                raise ValueError(f"{meta_path}: cache entry of {case_id} was built with other settings "
                                 f"({meta.get('settings')}) than {asdict(self.settings)}; it must be rebuilt "
                                 "(FeatureCache.build does so), not reused")
            feats = np.load(npy, mmap_mode="r")
            if list(feats.shape) != list(meta.get("shape", feats.shape)):
                raise ValueError(f"{npy}: shape {feats.shape} differs from {meta_path}'s {meta['shape']}; "
                                 "rebuild the cache entry")
            self._entries[case_id] = CacheEntry(case_id, feats, [tuple(t) for t in meta["tiles"]],
                                                tuple(meta["padded_hw"]), int(meta["depth"]))
        return self._entries[case_id]

    def zero_slice(self) -> np.ndarray:
        """Features of an all-zero slice (``(C*256) x h x w``), used for z padding."""
        if self._zero is None:
            self._zero = np.load(self.root / ZERO_SLICE)
        return self._zero

    def __getstate__(self) -> dict:  # DataLoader workers re-open the memory maps
        state = dict(self.__dict__)
        state["_entries"], state["_zero"] = {}, None
        return state


def cache_settings(config, model: SAM3D) -> CacheSettings:
    """The :class:`CacheSettings` of an :class:`~sam3dlib.config.ExperimentConfig` and its model."""
    _, h, w = config.patch_size
    stride = tuple(config.cache_stride) if config.cache_stride else (max(1, h // 2), max(1, w // 2))
    source = model.encoder_sha256 or f"random init (seed {config.seed})"
    input_hw = None if tuple(model.input_hw) == (h, w) else tuple(model.input_hw)
    return CacheSettings(config.encoder, source, (h, w), stride, config.encoder_dtype, model.in_channels,
                         encoder_input_hw=input_hw, embedding_pool=model.embedding_pool)
