"""Training patches: case/location sampling with nnU-Net's foreground oversampling, padding, augmentation.

Item ``i`` of :class:`PatchDataset` depends only on ``(seed, i)`` (its RNG is
``np.random.default_rng([seed, i])``), so results do not depend on the number of DataLoader
workers. Items are meant to be batched in order (``DataLoader(..., batch_size=B, shuffle=False)``):
the item at batch position ``i % B >= round(B * (1 - oversample_foreground))`` is forced to
contain foreground (nnU-Net v1: 1 of 2 items for B = 2, 1 of 4 for B = 4).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from sam3dlib.data.augment import Augmenter, apply_spatial, draw_spatial, input_size, mirror
from sam3dlib.data.store import PreparedDataset

#: foreground voxels kept per class and case for oversampling (a fixed-seed subsample), for
#: image patches and the training layer's cached-mode feature patches alike
MAX_LOCATIONS_PER_CLASS = 10000


def class_locations(label: np.ndarray, max_per_class: int = MAX_LOCATIONS_PER_CLASS) -> dict[int, np.ndarray]:
    """Up to ``max_per_class`` voxel coordinates (N x 3, z/y/x) per foreground class (deterministic subsample)."""
    out = {}
    lab = np.asarray(label)
    for c in np.unique(lab):
        if c == 0:
            continue
        idx = np.argwhere(lab == c)
        if len(idx) > max_per_class:
            idx = idx[np.random.default_rng(int(c)).choice(len(idx), max_per_class, replace=False)]
        out[int(c)] = idx
    return out


class ClassLocations:
    """The :func:`class_locations` of a store's cases, computed once per case and process.

    Shared by the image patches (:class:`PatchDataset`) and the feature patches of the
    training layer's cached mode, so both oversample foreground from the same voxels.

    Args:
        store: anything with ``label(case_id) -> D x H x W array or None``.
    """

    def __init__(self, store) -> None:
        self.store = store
        self._cache: dict[str, dict[int, np.ndarray]] = {}

    def __call__(self, case_id: str) -> dict[int, np.ndarray]:
        """{class: N x 3 (z, y, x) voxels}; empty for an unlabelled case."""
        if case_id not in self._cache:
            label = self.store.label(case_id)
            self._cache[case_id] = class_locations(label) if label is not None else {}
        return self._cache[case_id]


def force_foreground(index: int, batch_size: int, oversample_foreground: float = 0.33) -> bool:
    """nnU-Net v1 rule: batch position ``index % B >= round(B * (1 - p))`` must contain foreground."""
    return (index % batch_size) >= round(batch_size * (1 - oversample_foreground))


def sample_patch_location(shape: Sequence[int], patch_size: Sequence[int], rng: np.random.Generator,
                          locations: dict[int, np.ndarray] | None = None, force_fg: bool = False) -> tuple[int, int, int]:
    """Lower corner (z, y, x) of a patch in a volume of ``shape`` (may be negative: pad there).

    As nnU-Net v1: random corner in the allowed range (a volume smaller than the patch is centred
    with random jitter); if ``force_fg`` and ``locations`` has a class, a class is drawn uniformly
    and the patch is centred on one of its voxels (clipped to the allowed range).
    """
    need = [max(0, p - s) for p, s in zip(patch_size, shape)]
    lb = [-(n // 2) for n in need]
    ub = [s + n // 2 + n % 2 - p for s, n, p in zip(shape, need, patch_size)]
    if force_fg and locations:
        cls = sorted(locations)[int(rng.integers(len(locations)))]
        vox = locations[cls][int(rng.integers(len(locations[cls])))]
        return tuple(int(min(max(lo, v - p // 2), hi)) for v, p, lo, hi in zip(vox, patch_size, lb, ub))
    return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(lb, ub))


def crop_pad(array: np.ndarray, start: Sequence[int], size: Sequence[int], value: float = 0) -> np.ndarray:
    """Crop the last three axes of ``array`` at ``start`` with ``size``, padding with ``value`` outside."""
    spatial = array.shape[-3:]
    src = tuple(slice(max(0, s), min(n, s + k)) for s, k, n in zip(start, size, spatial))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start))
    out = np.full(array.shape[:-3] + tuple(size), value, dtype=array.dtype)
    out[(Ellipsis,) + dst] = array[(Ellipsis,) + src]
    return out


@dataclass(frozen=True)
class PatchLocation:
    """Where a patch comes from: case, lower corner (z, y, x) and whether it was forced to foreground."""

    case_id: str
    start: tuple[int, int, int]
    forced_foreground: bool


class PatchDataset(Dataset):
    """Random training patches of a prepared store (a map-style ``torch`` Dataset).

    Args:
        store: the prepared store.
        case_ids: cases to draw from (uniformly, with replacement), e.g. ``store.split().train``.
        patch_size: (D, H, W).
        batch_size: used only for the foreground-oversampling position rule.
        iterations: number of batches; ``len(dataset) == iterations * batch_size``.
        augment: apply the moreDA augmentation.
        seed: base seed; item ``i`` uses ``default_rng([seed, i])``.
        oversample_foreground: nnU-Net's ``oversample_foreground_percent``.
        dummy_2d: in-plane-only spatial augmentation; ``None`` = nnU-Net's rule on ``patch_size``.

    Item ``i`` is ``{"image": float32 C x D x H x W, "label": int64 D x H x W, "case_id": str}``.
    """

    def __init__(self, store: PreparedDataset, case_ids: Sequence[str], patch_size: tuple[int, int, int],
                 batch_size: int, iterations: int, augment: bool = True, seed: int = 0,
                 oversample_foreground: float = 0.33, dummy_2d: bool | None = None) -> None:
        if not case_ids:
            raise ValueError("PatchDataset: case_ids is empty")
        missing = sorted(set(case_ids) - set(store.case_ids))
        if missing:
            raise ValueError(f"PatchDataset: case(s) {missing[:5]} not in the store {store.root}")
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ValueError(f"PatchDataset: patch_size must be 3 positive ints (D, H, W), got {patch_size}")
        self.store, self.case_ids = store, list(case_ids)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size, self.iterations = int(batch_size), int(iterations)
        self.augment, self.seed, self.oversample = augment, int(seed), float(oversample_foreground)
        self.augmenter = Augmenter(self.patch_size, dummy_2d) if augment else None
        self.locations = ClassLocations(store)

    def __len__(self) -> int:
        return self.iterations * self.batch_size

    def location(self, index: int, rng: np.random.Generator | None = None) -> PatchLocation:
        """The (un-augmented) patch location of item ``index``; reusable by feature-cache trainers."""
        rng = rng if rng is not None else np.random.default_rng([self.seed, index])
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        forced = force_foreground(index, self.batch_size, self.oversample)
        shape = self.store.image(case_id).shape[1:]
        start = sample_patch_location(shape, self.patch_size, rng, self.locations(case_id) if forced else None, forced)
        return PatchLocation(case_id, start, forced)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = np.random.default_rng([self.seed, index])
        loc = self.location(index, rng)
        image, label = self.store.image(loc.case_id), self.store.label(loc.case_id)
        if label is None:
            label = np.zeros(image.shape[1:], np.uint8)
        matrix = draw_spatial(rng, self.augmenter.dummy_2d) if self.augmenter else None
        if matrix is not None:
            size = input_size(matrix, self.patch_size)
            start = [s + p // 2 - q // 2 for s, p, q in zip(loc.start, self.patch_size, size)]
            img_t = torch.from_numpy(crop_pad(image, start, size))
            lab_t = torch.from_numpy(crop_pad(label, start, size).astype(np.int64))
            img_t, lab_t = apply_spatial(img_t, lab_t, matrix, self.patch_size)
        else:
            img_t = torch.from_numpy(crop_pad(image, loc.start, self.patch_size))
            lab_t = torch.from_numpy(crop_pad(label, loc.start, self.patch_size).astype(np.int64))
        if self.augmenter:
            img_t = self.augmenter.intensity(img_t, rng)
            img_t, lab_t = mirror(img_t, lab_t, rng)
        return {"image": img_t.float().contiguous(), "label": lab_t.long().contiguous(), "case_id": loc.case_id}

