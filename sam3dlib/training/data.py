"""Patch streams for training and online validation, in both encoder modes.

Every item is a pure function of ``(seed, epoch, stream, index)``: the item index encodes
(iteration, position in the batch), so a resumed run sees exactly the patches an
uninterrupted run would, and under DDP each rank takes its share of every global batch.

Cached mode (:class:`CachedPatchDataset`) cuts patches from the feature store: a patch is
(case, tile, z0). Exact augmentations on features: the patch position (z anywhere, in-plane
on the tile grid) and mirroring along z (slice order). In-plane mirroring, rotation,
scaling and intensity augmentations would need re-encoding and are not applied.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from sam3dlib.training.feature_cache import FeatureCache
from sam3dlib.training.distributed import DistContext, shard_batches

TRAIN_STREAM, VAL_STREAM = 0, 1
_MAX_FG_COORDS = 20000


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A 32-bit seed for one epoch's train or validation stream."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


class CachedPatchDataset(Dataset):
    """Feature patches ``{"features": (C*256) x d x h x w, "label": d x H x W, "case_id"}``.

    Args:
        cache: the built :class:`~sam3dlib.training.feature_cache.FeatureCache`.
        store: the :class:`~sam3dlib.data.store.PreparedDataset` (labels).
        case_ids: cases to sample (uniformly, with replacement).
        patch_size: (d, H, W); H, W equal the cache's crop.
        batch_size: items per batch (positions >= round(B * (1 - oversample)) are forced onto
            foreground, as nnU-Net).
        iterations: batches; the dataset has ``iterations * batch_size`` items.
        augment: mirror along z with probability 0.5 (the only exact feature augmentation).
        seed: stream seed (see :func:`stream_seed`).
        oversample_foreground: nnU-Net's ``oversample_foreground_percent``.
    """

    def __init__(self, cache: FeatureCache, store, case_ids: Sequence[str], patch_size: Sequence[int],
                 batch_size: int, iterations: int, augment: bool = True, seed: int = 0,
                 oversample_foreground: float = 0.33) -> None:
        if not case_ids:
            raise ValueError("CachedPatchDataset needs at least one case")
        self.cache, self.store, self.case_ids = cache, store, list(case_ids)
        self.patch_size = tuple(int(s) for s in patch_size)
        if tuple(self.patch_size[1:]) != tuple(cache.settings.crop_hw):
            raise ValueError(f"patch in-plane size {self.patch_size[1:]} differs from the cache's crop {cache.settings.crop_hw}")
        self.batch_size, self.iterations = int(batch_size), int(iterations)
        self.augment, self.seed, self.oversample = augment, int(seed), float(oversample_foreground)
        self._fg: dict[str, dict[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.iterations * self.batch_size

    def _foreground(self, case_id: str) -> dict[int, np.ndarray]:
        if case_id not in self._fg:
            label = np.asarray(self.store.label(case_id))
            rng = np.random.default_rng(0)
            out = {}
            for cls in np.unique(label):
                if cls == 0:
                    continue
                coords = np.argwhere(label == cls)
                if len(coords) > _MAX_FG_COORDS:
                    coords = coords[np.sort(rng.choice(len(coords), _MAX_FG_COORDS, replace=False))]
                out[int(cls)] = coords
            self._fg[case_id] = out
        return self._fg[case_id]

    def locate(self, index: int) -> tuple[str, int, int, bool]:
        """(case id, tile index, z0, mirror_z) of item ``index``."""
        rng = np.random.default_rng([self.seed, index])
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        entry = self.cache.entry(case_id)
        d = self.patch_size[0]
        zmax = max(entry.depth - d, 0)
        ch, cw = self.cache.settings.crop_hw
        force_fg = (index % self.batch_size) >= round(self.batch_size * (1 - self.oversample))
        fg = self._foreground(case_id) if force_fg else {}
        if fg:
            cls = list(fg)[int(rng.integers(len(fg)))]
            z, y, x = fg[cls][int(rng.integers(len(fg[cls])))]
            tiles = [i for i, (y0, x0) in enumerate(entry.tiles) if y0 <= y < y0 + ch and x0 <= x < x0 + cw]
            tile = tiles[int(rng.integers(len(tiles)))]
            lo, hi = max(0, int(z) - d + 1), min(int(z), zmax)
            z0 = int(rng.integers(lo, hi + 1)) if hi >= lo else min(int(z), zmax)
        else:
            tile = int(rng.integers(len(entry.tiles)))
            z0 = int(rng.integers(zmax + 1))
        mirror = bool(self.augment and rng.random() < 0.5)
        return case_id, tile, z0, mirror

    def patch(self, case_id: str, tile: int, z0: int) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(C*256) x d x h x w`` (float32) and label ``d x H x W`` of one patch."""
        entry = self.cache.entry(case_id)
        d = self.patch_size[0]
        ch, cw = self.cache.settings.crop_hw
        y0, x0 = entry.tiles[tile]
        feats = np.asarray(entry.features[tile, :, z0:z0 + d], dtype=np.float32)
        label = np.zeros((d, ch, cw), dtype=np.int64)
        src = np.asarray(self.store.label(case_id)[z0:z0 + d, y0:y0 + ch, x0:x0 + cw])
        label[: src.shape[0], : src.shape[1], : src.shape[2]] = src
        if feats.shape[1] < d:  # volume thinner than the patch: zero slices at the end
            zero = self.cache.zero_slice().astype(np.float32)[:, None]
            feats = np.concatenate([feats, np.repeat(zero, d - feats.shape[1], axis=1)], axis=1)
        return feats, label

    def __getitem__(self, index: int) -> dict:
        case_id, tile, z0, mirror = self.locate(index)
        feats, label = self.patch(case_id, tile, z0)
        if mirror:
            feats, label = feats[:, ::-1], label[::-1]
        return {"features": torch.from_numpy(np.ascontiguousarray(feats)),
                "label": torch.from_numpy(np.ascontiguousarray(label)), "case_id": case_id}


def patch_dataset(config, store, cache: FeatureCache | None, case_ids: Sequence[str], iterations: int,
                  augment: bool, seed: int) -> Dataset:
    """The dataset of one epoch's stream in the config's encoder mode."""
    if config.encoder_mode == "cached":
        assert cache is not None
        return CachedPatchDataset(cache, store, case_ids, config.patch_size, config.batch_size, iterations,
                                  augment=augment and config.augment, seed=seed,
                                  oversample_foreground=config.oversample_foreground)
    from sam3dlib.data.sampling import PatchDataset

    return PatchDataset(store, list(case_ids), tuple(config.patch_size), config.batch_size, iterations,
                        augment=augment and config.augment, seed=seed,
                        oversample_foreground=config.oversample_foreground)


def epoch_loader(config, store, cache: FeatureCache | None, case_ids: Sequence[str], iterations: int,
                 epoch: int, stream: int, ctx: DistContext, augment: bool, pin_memory: bool = False) -> DataLoader:
    """This rank's DataLoader over one epoch's stream (its share of every global batch).

    ``pin_memory`` (on for CUDA) makes the trainer's ``non_blocking`` host-to-device copies
    asynchronous.
    """
    ds = patch_dataset(config, store, cache, case_ids, iterations, augment, stream_seed(config.seed, epoch, stream))
    indices = shard_batches(iterations, config.batch_size, ctx)
    return DataLoader(Subset(ds, indices), batch_size=config.batch_size // ctx.world_size, shuffle=False,
                      num_workers=config.num_workers, pin_memory=pin_memory, drop_last=False,
                      persistent_workers=False)
