"""Feature sources: where the decoder's input features come from during training.

The frozen SAM encoder turns image patches into ``B x (C*256) x D x H/16 x W/16`` features.
A :class:`FeatureSource` decides how a training or validation batch gets them, and with it
which patches exist and how they are augmented:

* :class:`OnlineEncoder` (``encoder_mode="online"``, the authors' code's way): the stream yields image
  patches (:class:`~sam3dlib.data.sampling.PatchDataset`: nnU-Net's sampling and full moreDA
  augmentation) and every step encodes the augmented patch.
* :class:`CachedFeatures` (``encoder_mode="cached"``): every train/val case is encoded once
  into the float16 store of :mod:`sam3dlib.training.feature_cache`; the stream yields feature
  patches (:class:`~sam3dlib.training.data.CachedPatchDataset`) and no step runs the encoder.

:func:`feature_source` is the one place that reads ``config.encoder_mode``.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sam3dlib.config import ExperimentConfig
from sam3dlib.modeling.sam3d import SAM3D
from sam3dlib.training.data import CachedPatchDataset
from sam3dlib.training.distributed import DistContext
from sam3dlib.training.feature_cache import FeatureCache, cache_settings
from sam3dlib.utils.fileio import check_output_dir
from sam3dlib.utils.oom import is_oom_error, training_oom_error


class FeatureSource(ABC):
    """How the trainer gets encoder features for its batches (one per run, from the config).

    Args:
        config: the experiment (patch size, batch size, augmentation, oversampling).
    """

    #: the ``encoder_mode`` this source implements
    mode: str

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config

    def check_output(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Fail before any work when a folder this source writes cannot be written."""

    def prepare(self, model: SAM3D, store, case_ids: Sequence[str], device: torch.device,  # noqa: B027 - optional hook
                ctx: DistContext, progress: bool = True) -> None:
        """Work done once before the first epoch (after the run folder is set up)."""

    @abstractmethod
    def dataset(self, store, case_ids: Sequence[str], iterations: int, augment: bool, seed: int) -> Dataset:
        """One stream's items (``iterations * batch_size``); ``augment`` False for validation."""

    @abstractmethod
    def features(self, model: SAM3D, batch: dict, device: torch.device) -> torch.Tensor:
        """The batch's ``B x (C*256) x D x h x w`` features on ``device``."""


class OnlineEncoder(FeatureSource):
    """Encode each (augmented) image patch at every step: the authors' training."""

    mode = "online"

    def dataset(self, store, case_ids: Sequence[str], iterations: int, augment: bool, seed: int) -> Dataset:
        from sam3dlib.data.sampling import PatchDataset

        c = self.config
        return PatchDataset(store, list(case_ids), tuple(c.patch_size), c.batch_size, iterations,
                            augment=augment and c.augment, seed=seed, oversample_foreground=c.oversample_foreground)

    def features(self, model: SAM3D, batch: dict, device: torch.device) -> torch.Tensor:
        return model.encode(batch["image"].to(device, non_blocking=True))


class CachedFeatures(FeatureSource):
    """Read feature patches from the on-disk store built once per case.

    What this does to augmentation and sampling (the price of not running the encoder):
    a patch can only be cut where features exist, so the in-plane position is on the store's
    tile grid (``cache_stride``, default half the crop) while z is free; foreground
    oversampling keeps nnU-Net's rule but picks a tile and z range holding the drawn voxel;
    the only augmentation is mirroring along z (slice order). In-plane mirroring, rotation,
    scaling, elastic and every intensity augmentation would need re-encoding and are not
    applied: cached mode is a cheaper, less augmented variant of the authors' training.

    Args:
        config: the experiment.
        cache_dir: root of the feature store (several encoder settings can share it).
    """

    mode = "cached"

    def __init__(self, config: ExperimentConfig, cache_dir: str | os.PathLike) -> None:
        super().__init__(config)
        self.cache_dir = Path(cache_dir)
        self.cache: FeatureCache | None = None

    def check_output(self) -> None:
        check_output_dir(self.cache_dir, "feature cache folder (cache_dir)")

    def prepare(self, model: SAM3D, store, case_ids: Sequence[str], device: torch.device,  # noqa: B027 - optional hook
                ctx: DistContext, progress: bool = True) -> None:
        """Encode the cases missing from (or stale in) the store; rank r builds case i % world == r.

        Raises:
            TrainingOOMError: out of memory while encoding.
        """
        self.cache = FeatureCache(self.cache_dir, cache_settings(self.config, model))
        try:
            self.cache.build(store, sorted(set(case_ids)), model, device, ctx.rank, ctx.world_size,
                             progress=progress and ctx.is_main)
        except (RuntimeError, MemoryError) as exc:
            if is_oom_error(exc):
                raise training_oom_error(exc, self.config, "feature-cache encoding") from exc
            raise
        ctx.barrier()

    def dataset(self, store, case_ids: Sequence[str], iterations: int, augment: bool, seed: int) -> Dataset:
        if self.cache is None:
            raise RuntimeError("CachedFeatures.dataset before prepare(): the feature store is not built")
        c = self.config
        return CachedPatchDataset(self.cache, store, case_ids, c.patch_size, c.batch_size, iterations,
                                  augment=augment and c.augment, seed=seed,
                                  oversample_foreground=c.oversample_foreground)

    def features(self, model: SAM3D, batch: dict, device: torch.device) -> torch.Tensor:
        return batch["features"].to(device, non_blocking=True)


def default_cache_dir(config: ExperimentConfig, data_dir: str | os.PathLike) -> Path:
    """``config.cache_dir``, or ``<data_dir>/feature_cache`` when it is None."""
    return Path(config.cache_dir) if config.cache_dir else Path(data_dir) / "feature_cache"


def feature_source(config: ExperimentConfig, data_dir: str | os.PathLike) -> FeatureSource:
    """The run's feature source, chosen once from ``config.encoder_mode``.

    ``online`` trains as the paper does. ``cached`` encodes each case once (into
    :func:`default_cache_dir`) and trains on stored features, which changes augmentation
    and sampling as :class:`CachedFeatures` says; report such runs as the cached variant.
    """
    if config.encoder_mode == "cached":
        return CachedFeatures(config, default_cache_dir(config, data_dir))
    return OnlineEncoder(config)
