"""Tiny synthetic datasets in a user's layouts (MSD, nnU-Net v2 raw) for tests, notebooks and CI.

Each case is an ellipsoid "organ" (label 1) holding a small "lesion" (label 2, a rare class:
well under 1 % of the voxels) in a noisy body, on an anisotropic grid (3-3.5 mm between
slices, 0.8-0.9 mm in-plane) with odd shapes that differ per case and are smaller in-plane than
the smoke crop (48 x 48). Two channels: ``CT`` (Hounsfield-like values) and an ``MRI``-like
channel (arbitrary scale), so both normalisation rules are exercised. Not anatomy, not for
judging accuracy: only for checking that the machinery runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sam3dlib.data.io import atomic_save_nifti
from sam3dlib.data.phantoms import scanner_nifti
from sam3dlib.data.user_dataset import USER_LAYOUTS
from sam3dlib.utils.fileio import atomic_write_json

PHANTOM_LABELS = {0: "background", 1: "organ", 2: "lesion"}
CHANNELS = ("CT", "MRI")


def _case(rng: np.random.Generator, shape_xyz: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(image C x X x Y x Z float32, label X x Y x Z uint8) of one phantom case."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape_xyz), indexing="ij")
    cx, cy = rng.uniform(-0.15, 0.15, 2)
    organ = ((x - cx) / 0.55) ** 2 + ((y - cy) / 0.45) ** 2 + (z / 0.8) ** 2 < 1
    lx, ly = cx + rng.uniform(-0.15, 0.15), cy + rng.uniform(-0.1, 0.1)
    lesion = organ & (((x - lx) / 0.16) ** 2 + ((y - ly) / 0.16) ** 2 + (z / 0.35) ** 2 < 1)
    body = (x / 0.95) ** 2 + (y / 0.9) ** 2 < 1
    label = organ.astype(np.uint8) + lesion.astype(np.uint8)
    ct = np.where(body, 40.0, -1000.0) + 60.0 * organ + 80.0 * lesion + rng.normal(0, 15, shape_xyz)
    mr = np.where(body, 300.0, 0.0) + 250.0 * organ - 150.0 * lesion + rng.normal(0, 20, shape_xyz) * body
    return np.stack([ct, mr]).astype(np.float32), label


def _affine(spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    aff = np.diag([*spacing_xyz, 1.0])
    aff[:3, 3] = (-20.0, -30.0, 10.0)
    return aff


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    atomic_save_nifti(scanner_nifti(arr, affine), path)


def write_user_phantom(out: str | Path, layout: str = "msd", n_cases: int = 6, seed: int = 0,
                       channels: tuple[str, ...] = CHANNELS) -> Path:
    """Write a phantom dataset in ``layout`` (``msd`` or ``nnunet_v2``) to ``out``.

    ``msd``: ``imagesTr/phantom_NNN.nii.gz`` 4D (modalities last) + ``labelsTr/`` +
    ``dataset.json`` with ``modality``/``labels``/``training``. ``nnunet_v2``:
    ``imagesTr/phantom_NNN_XXXX.nii.gz`` per channel + ``labelsTr/`` + ``dataset.json`` with
    ``channel_names``/``labels``/``numTraining``/``file_ending``. Returns ``out``.
    """
    if layout not in USER_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(USER_LAYOUTS)}, got {layout!r}")
    out = Path(out)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    training = []
    for i in range(n_cases):
        cid = f"phantom_{i:03d}"
        shape = (int(rng.integers(31, 45)) | 1, int(rng.integers(27, 41)) | 1, int(rng.integers(9, 14)))
        spacing = (float(rng.uniform(0.8, 0.9)), float(rng.uniform(0.8, 0.9)), float(rng.choice([3.0, 3.5])))
        image, label = _case(rng, shape)
        image = image[: len(channels)]
        aff = _affine(spacing)
        if layout == "msd":
            _save(np.moveaxis(image, 0, -1) if len(channels) > 1 else image[0], aff, out / "imagesTr" / f"{cid}.nii.gz")
        else:
            for c in range(len(channels)):
                _save(image[c], aff, out / "imagesTr" / f"{cid}_{c:04d}.nii.gz")
        _save(label, aff, out / "labelsTr" / f"{cid}.nii.gz")
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    chans = {str(c): n for c, n in enumerate(channels)}
    if layout == "msd":
        meta = {"name": "PhantomMSD", "description": "sam3dlib phantom (not anatomy)", "tensorImageSize": "4D",
                "modality": chans, "labels": {str(k): v for k, v in PHANTOM_LABELS.items()},
                "numTraining": n_cases, "numTest": 0, "training": training, "test": []}
    else:
        meta = {"name": "PhantomV2", "channel_names": chans, "labels": {v: k for k, v in PHANTOM_LABELS.items()},
                "numTraining": n_cases, "file_ending": ".nii.gz"}
    atomic_write_json(out / "dataset.json", meta)
    atomic_write_json(out / "PHANTOM.json", {"dataset": meta["name"], "layout": layout, "seed": seed})
    return out
