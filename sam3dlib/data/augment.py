"""nnU-Net v1 "moreDA" augmentation with MONAI transforms (parameters: datasets.json
``_common.data_augmentation_moreDA``).

Random parameters are drawn from a numpy ``Generator`` supplied per sample, so a sample is
reproducible from (seed, index) alone, whatever the number of DataLoader workers.

Differences to batchgenerators 0.21 (documented in docs/DATA.md): rotation/scaling are resampled
trilinearly (images) / nearest (labels) instead of cubic / linear-on-one-hot; the gamma exponent
is drawn uniformly from [0.7, 1.5] (nnU-Net: half the draws below 1); blur is applied to all
channels of a sample at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    AffineGrid,
    RandAdjustContrast,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandScaleIntensity,
    RandScaleIntensityFixedMean,
    RandSimulateLowResolution,
    Resample,
)

#: the moreDA parameters (mirrors datasets.json; tests check they agree)
ROTATION_DEG = 30.0
ROTATION_DEG_DUMMY_2D = 180.0
P_ROTATION = 0.2
P_SCALING = 0.2
SCALE_RANGE = (0.7, 1.4)
P_NOISE, NOISE_STD_MAX = 0.1, 0.1
P_BLUR, BLUR_SIGMA = 0.2, (0.5, 1.0)
P_BRIGHTNESS, BRIGHTNESS_RANGE = 0.15, (0.75, 1.25)
P_CONTRAST, CONTRAST_RANGE = 0.15, (0.75, 1.25)
P_LOWRES, LOWRES_ZOOM = 0.25, (0.5, 1.0)
P_GAMMA_INVERTED, P_GAMMA, GAMMA_RANGE = 0.1, 0.3, (0.7, 1.5)
P_MIRROR = 0.5
ANISO_PATCH_RATIO = 3.0


def _plain(x) -> torch.Tensor:
    """A plain float tensor (MONAI returns ``MetaTensor``s, whose per-op overhead we do not need)."""
    x = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
    return x.float()


def use_dummy_2d(patch_size: tuple[int, int, int]) -> bool:
    """nnU-Net's dummy-2D rule: in-plane-only spatial augmentation if max(patch) / patch[z] > 3."""
    return max(patch_size) / patch_size[0] > ANISO_PATCH_RATIO


def _rot(axis: int, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def draw_spatial(rng: np.random.Generator, dummy_2d: bool) -> np.ndarray | None:
    """A 4x4 matrix (output voxel -> input voxel, centred) for rotation/scaling, or None (no spatial aug)."""
    do_rot, do_scale = rng.uniform() < P_ROTATION, rng.uniform() < P_SCALING
    if not (do_rot or do_scale):
        return None
    m = np.eye(3)
    if do_rot:
        if dummy_2d:
            m = _rot(0, math.radians(rng.uniform(-ROTATION_DEG_DUMMY_2D, ROTATION_DEG_DUMMY_2D)))
        else:
            for ax in range(3):
                m = _rot(ax, math.radians(rng.uniform(-ROTATION_DEG, ROTATION_DEG))) @ m
    if do_scale:
        f = rng.uniform(SCALE_RANGE[0], 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, SCALE_RANGE[1])
        m = m @ np.diag([1.0 if dummy_2d else f, f, f])
    out = np.eye(4)
    out[:3, :3] = m
    return out


def input_size(matrix: np.ndarray, patch_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """Size of the region to crop so that ``matrix`` maps the whole output patch inside it (same parity)."""
    half = np.array(patch_size, float) / 2
    corners = np.array([[sz * half[0], sy * half[1], sx * half[2]] for sz in (-1, 1) for sy in (-1, 1) for sx in (-1, 1)])
    ext = np.abs(corners @ matrix[:3, :3].T).max(axis=0)
    size = [max(p, int(math.ceil(2 * e)) + 2) for p, e in zip(patch_size, ext)]
    return tuple(s + ((s - p) % 2) for s, p in zip(size, patch_size))


def apply_spatial(image: torch.Tensor, label: torch.Tensor, matrix: np.ndarray, patch_size: tuple[int, int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample the (enlarged, centred) crop with ``matrix`` to ``patch_size`` (MONAI ``AffineGrid`` + ``Resample``)."""
    grid, _ = AffineGrid(affine=torch.as_tensor(matrix, dtype=torch.float32))(spatial_size=patch_size)
    img = Resample(mode="bilinear", padding_mode="zeros")(image, grid=grid)
    lab = Resample(mode="nearest", padding_mode="zeros")(label[None].float(), grid=grid)[0]
    return _plain(img), _plain(lab).round().long()


class IntensityAugment:
    """The moreDA intensity transforms (noise, blur, brightness, contrast, low resolution, gamma x2), MONAI."""

    def __init__(self, dummy_2d: bool = False) -> None:
        self.dummy_2d = dummy_2d
        lowres_mode = "bilinear" if dummy_2d else "trilinear"
        self.transforms = [
            RandGaussianNoise(prob=P_NOISE, mean=0.0, std=NOISE_STD_MAX, sample_std=True),
            RandGaussianSmooth(sigma_x=BLUR_SIGMA, sigma_y=BLUR_SIGMA, sigma_z=BLUR_SIGMA, prob=P_BLUR),
            RandScaleIntensity(factors=(BRIGHTNESS_RANGE[0] - 1, BRIGHTNESS_RANGE[1] - 1), prob=P_BRIGHTNESS,
                               channel_wise=True),
            RandScaleIntensityFixedMean(prob=P_CONTRAST, factors=(CONTRAST_RANGE[0] - 1, CONTRAST_RANGE[1] - 1),
                                        fixed_mean=True, preserve_range=True, channel_wise=True),
            RandSimulateLowResolution(prob=P_LOWRES, downsample_mode="nearest", upsample_mode=lowres_mode,
                                      zoom_range=LOWRES_ZOOM),
            RandAdjustContrast(prob=P_GAMMA_INVERTED, gamma=GAMMA_RANGE, invert_image=True, retain_stats=True),
            RandAdjustContrast(prob=P_GAMMA, gamma=GAMMA_RANGE, invert_image=False, retain_stats=True),
        ]

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Augment ``C x D x H x W``; randomness comes only from ``rng``."""
        seeds = rng.integers(0, 2**31 - 1, size=len(self.transforms))
        x = image
        for t, s in zip(self.transforms, seeds):
            t.set_random_state(seed=int(s))
            if isinstance(t, RandSimulateLowResolution) and self.dummy_2d:  # in-plane only: slices as channels
                c, d = x.shape[:2]
                x = _plain(t(x.reshape(c * d, *x.shape[2:]))).reshape(x.shape)
            else:
                x = _plain(t(x))
        return x


def mirror(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each spatial axis (z, y, x) independently with p = 0.5."""
    axes = [ax for ax in range(3) if rng.uniform() < P_MIRROR]
    if axes:
        image = torch.flip(image, [a + 1 for a in axes])
        label = torch.flip(label, axes)
    return image, label


@dataclass
class Augmenter:
    """Full moreDA pipeline for one patch size: spatial (caller crops :func:`input_size`), intensity, mirroring."""

    patch_size: tuple[int, int, int]
    dummy_2d: bool | None = None

    def __post_init__(self) -> None:
        if self.dummy_2d is None:
            self.dummy_2d = use_dummy_2d(self.patch_size)
        self.intensity = IntensityAugment(self.dummy_2d)
