"""Patch streams of the trainer: the stream seeds, this rank's loader, the cached-mode patches.

Every item is a pure function of ``(seed, epoch, stream, index)``: the item index encodes
(iteration, position in the batch), so a resumed run sees exactly the patches an
uninterrupted run would, and under DDP each rank takes its share of every global batch.
Which dataset a stream draws from (image patches or feature patches) is the feature
source's choice (:mod:`sam3dlib.training.feature_source`).

Cached mode (:class:`CachedPatchDataset`) cuts patches from the feature store: a patch is
(case, tile, z0). Exact augmentations on features: the patch position (z anywhere, in-plane
on the tile grid) and mirroring along z (slice order). In-plane mirroring, rotation,
scaling and intensity augmentations would need re-encoding and are not applied.
Foreground oversampling uses the data layer's rule and voxels
(:func:`~sam3dlib.data.sampling.force_foreground`, :class:`~sam3dlib.data.sampling.ClassLocations`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from sam3dlib.data.sampling import ClassLocations, force_foreground
from sam3dlib.training.distributed import DistContext, shard_batches
from sam3dlib.training.feature_cache import FeatureCache

TRAIN_STREAM, VAL_STREAM = 0, 1


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
        self.locations = ClassLocations(store)

    def __len__(self) -> int:
        return self.iterations * self.batch_size

    def locate(self, index: int) -> tuple[str, int, int, bool]:
        """(case id, tile index, z0, mirror_z) of item ``index``."""
        rng = np.random.default_rng([self.seed, index])
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        entry = self.cache.entry(case_id)
        d = self.patch_size[0]
        zmax = max(entry.depth - d, 0)
        ch, cw = self.cache.settings.crop_hw
        forced = force_foreground(index, self.batch_size, self.oversample)
        fg = self.locations(case_id) if forced else {}
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


class PatchSource(Protocol):
    """What a stream needs of a feature source (each :mod:`~sam3dlib.training.feature_source` is one)."""

    def dataset(self, store, case_ids: Sequence[str], iterations: int, augment: bool, seed: int) -> Dataset: ...


def epoch_loader(config, source: PatchSource, store, case_ids: Sequence[str], iterations: int, epoch: int,
                 stream: int, ctx: DistContext, augment: bool, pin_memory: bool = False) -> DataLoader:
    """This rank's DataLoader over one epoch's stream (its share of every global batch).

    Args:
        config: the experiment (seed, batch size, workers).
        source: the run's feature source; it makes the stream's dataset.
        store: the prepared store.
        case_ids: cases of the stream (train or val).
        iterations: global batches.
        epoch, stream: with ``config.seed`` they seed the stream (:func:`stream_seed`).
        ctx: this rank.
        augment: the training stream's augmentation (validation: False).
        pin_memory: on for CUDA; makes the trainer's ``non_blocking`` copies asynchronous.
    """
    ds = source.dataset(store, case_ids, iterations, augment, stream_seed(config.seed, epoch, stream))
    indices = shard_batches(iterations, config.batch_size, ctx)
    return DataLoader(Subset(ds, indices), batch_size=config.batch_size // ctx.world_size, shuffle=False,
                      num_workers=config.num_workers, pin_memory=pin_memory, drop_last=False,
                      persistent_workers=False)
