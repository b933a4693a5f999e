"""A real-MRI tissue-segmentation task from the MNI152 template that nilearn installs (offline).

Source: the ICBM 2009a nonlinear symmetric T1 template and its grey- and white-matter
probability maps, as bundled with ``nilearn`` (``nilearn/datasets/data/mni_icbm152_*_09a_*``)
and read with nilearn's own loaders (``load_mni152_template``, ``load_mni152_gm_template``,
``load_mni152_wm_template``, ``load_mni152_brain_mask``) at 1 mm, then block-averaged to
``resolution`` mm. Nothing is downloaded.

Labels (:data:`MNI_LABELS`): 0 background, 1 grey matter, 2 white matter. A voxel of the
brain mask takes the most probable of {other = 1 - GM - WM, GM, WM}; other and outside-mask
voxels are background. These are the template's own tissue maps, thresholded, not manual
segmentations.

Cases: one volume, so cases are **axial slabs** of ``slab`` slices; the lower slabs are
training cases and the upper ones test cases, with ``gap`` slices dropped between them so no
test slice is the neighbour of a training slice: train and test come from different anatomy
(inferior: cerebellum, temporal lobes, ventricles; superior: the cortex above). Slices
without brain are left out.

:func:`write_mni152_task` writes the task in the Medical Segmentation Decathlon layout
(``imagesTr/``, ``labelsTr/``, ``dataset.json``) plus ``split.json``; :func:`mni152_tissue`
returns the arrays.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from sam3dlib.data.specs import DatasetSpec
from sam3dlib.utils.fileio import atomic_write_json

MNI_LABELS = {0: "background", 1: "grey matter", 2: "white matter"}
MNI_SOURCE = ("MNI ICBM152 2009a nonlinear symmetric template (T1, GM and WM probability maps, brain mask) "
              "as bundled with nilearn, read with nilearn.datasets.load_mni152_*")


@dataclass(frozen=True)
class MNITissue:
    """The template as arrays: ``image`` float32 and ``label`` uint8 in nilearn's (x, y, z) order."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    resolution: int


@dataclass(frozen=True)
class Slab:
    """One case: slices ``z0 <= z < z1`` (z = inferior -> superior) and its role."""

    case_id: str
    z0: int
    z1: int
    role: str  # "train" or "test"


def _load_1mm(loader) -> nib.Nifti1Image:
    with warnings.catch_warnings():  # nilearn's loaders may warn about header details
        warnings.simplefilter("ignore")
        return loader(resolution=1)


def block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor**3`` blocks of a 3D array (trailing voxels that fill no block are dropped)."""
    if factor == 1:
        return volume.astype(np.float32)
    x, y, z = (s // factor for s in volume.shape)
    v = volume[: x * factor, : y * factor, : z * factor].astype(np.float32)
    return v.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5))


def mni152_tissue(resolution: int = 2) -> MNITissue:
    """The MNI152 2009a T1 and its background / GM / WM label map at ``resolution`` mm.

    The 1 mm files are read with nilearn's loaders (no resampling there: nilearn's own takes
    tens of seconds) and averaged over ``resolution``-voxel blocks here, the maps before the
    labels are derived; the affine follows the block centres.

    Raises:
        ImportError: nilearn is not installed (``pip install nilearn``).
        ValueError: ``resolution`` is not a positive integer.
    """
    from nilearn import datasets

    if int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be a positive integer number of mm, got {resolution}")
    r = int(resolution)
    t1 = _load_1mm(datasets.load_mni152_template)
    maps = [block_mean(np.asarray(_load_1mm(f).dataobj), r) for f in
            (datasets.load_mni152_gm_template, datasets.load_mni152_wm_template, datasets.load_mni152_brain_mask)]
    gm, wm, mask = maps[0], maps[1], maps[2] > 0.5
    other = np.clip(1.0 - gm - wm, 0.0, None)
    label = np.argmax(np.stack([other, gm, wm]), axis=0).astype(np.uint8)
    label[~mask] = 0
    affine = t1.affine.copy()
    affine[:3, :3] = t1.affine[:3, :3] * r
    affine[:3, 3] = t1.affine[:3, :3] @ np.full(3, (r - 1) / 2) + t1.affine[:3, 3]
    return MNITissue(block_mean(np.asarray(t1.dataobj), r), label, affine, r)


def mni152_slabs(label: np.ndarray, slab: int = 8, gap: int = 4, test_fraction: float = 0.35,
                 train_block: bool = False) -> list[Slab]:
    """Axial slabs over the slices that contain brain: lower ones train, upper ones test.

    Args:
        label: ``x, y, z`` label map.
        slab: slices per case.
        gap: slices left out between the last training and the first test slab.
        test_fraction: share of the brain's slices given to test slabs (rounded to whole slabs).
        train_block: one training case holding every brain slice below the gap (for training
            on random windows of ``slab`` slices, nnU-Net's random patches along z) instead
            of whole training slabs, which leave out the lowest slices that fill no slab.

    Raises:
        ValueError: no brain slice, or too few slices below the gap for one training slab.
    """
    z = np.flatnonzero(label.any(axis=(0, 1)))
    if z.size == 0:
        raise ValueError("the label map has no brain slice")
    lo, hi = int(z[0]), int(z[-1]) + 1
    n_test = max(1, round((hi - lo) * test_fraction / slab))
    test_start = hi - n_test * slab
    n_train = (test_start - gap - lo) // slab
    if n_train < 1:
        raise ValueError(f"{hi - lo} brain slices are too few for slabs of {slab} with a gap of {gap}")
    if train_block:
        slabs = [Slab("", lo, test_start - gap, "train")]
    else:
        train_start = test_start - gap - n_train * slab
        slabs = [Slab("", train_start + i * slab, train_start + (i + 1) * slab, "train") for i in range(n_train)]
    slabs += [Slab("", test_start + i * slab, test_start + (i + 1) * slab, "test") for i in range(n_test)]
    return [Slab(f"mni152_{i:03d}", s.z0, s.z1, s.role) for i, s in enumerate(slabs)]


def write_mni152_task(out: str | os.PathLike, resolution: int = 2, slab: int = 8, gap: int = 4,
                      train_block: bool = False, test_slabs: int | None = None) -> Path:
    """Write the MNI152 tissue task as an MSD-layout raw dataset; return ``out``.

    ``out/imagesTr/<case>.nii.gz`` (T1 slab, float32), ``out/labelsTr/<case>.nii.gz`` (uint8),
    ``out/dataset.json`` (MSD keys: name, description, reference, licence, modality, labels,
    numTraining, training), ``out/split.json`` (``{"train": [...], "test": [...]}``, the
    inferior/superior split) and the same split as nnU-Net's ``out/splits_final.json`` (one
    fold: train = the inferior cases, val = the superior test slabs), which ``sam3d prepare
    --raw`` takes as the store's folds. ``train_block``: one training case of every brain slice
    below the gap (:func:`mni152_slabs`); ``test_slabs``: keep only the first (most inferior) test
    slabs (None: all). Each case keeps the template's affine, shifted to its
    first slice. Files are written atomically; an existing ``dataset.json`` in ``out`` is replaced.
    """
    from sam3dlib.data.io import atomic_save_nifti

    out = Path(out)
    tissue = mni152_tissue(resolution)
    slabs = mni152_slabs(tissue.label, slab, gap, train_block=train_block)
    if test_slabs is not None:
        test = [s for s in slabs if s.role == "test"][:test_slabs]
        slabs = [s for s in slabs if s.role == "train"] + test
    for folder in ("imagesTr", "labelsTr"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for s in slabs:
        affine = tissue.affine.copy()
        affine[:3, 3] = tissue.affine[:3, :3] @ np.array([0, 0, s.z0]) + tissue.affine[:3, 3]
        image = nib.Nifti1Image(tissue.image[:, :, s.z0:s.z1], affine)
        label = nib.Nifti1Image(tissue.label[:, :, s.z0:s.z1], affine)
        label.set_data_dtype(np.uint8)
        atomic_save_nifti(image, out / "imagesTr" / f"{s.case_id}.nii.gz")
        atomic_save_nifti(label, out / "labelsTr" / f"{s.case_id}.nii.gz")
    split = {"train": [s.case_id for s in slabs if s.role == "train"],
             "test": [s.case_id for s in slabs if s.role == "test"],
             "slices": {s.case_id: [s.z0, s.z1] for s in slabs}}
    atomic_write_json(out / "split.json", split)
    atomic_write_json(out / "splits_final.json", [{"train": split["train"], "val": split["test"]}])
    atomic_write_json(out / "dataset.json", {
        "name": "MNI152Tissue",
        "description": (f"Grey/white-matter segmentation of the MNI152 2009a template at {resolution} mm; cases are "
                        f"axial slabs of {slab} slices, inferior ones for training, superior ones for testing "
                        f"({gap} slices left out between them; split.json)."),
        "reference": MNI_SOURCE,
        "licence": "see the MNI ICBM152 2009 template's terms (McConnell Brain Imaging Centre) and nilearn's",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {str(k): v for k, v in MNI_LABELS.items()},
        "numTraining": len(slabs),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{s.case_id}.nii.gz", "label": f"./labelsTr/{s.case_id}.nii.gz"}
                     for s in slabs],
        "test": [],
    })
    return out


def slab_arrays(tissue: MNITissue, slabs: list[Slab]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{case_id: (image D x H x W float32, label D x H x W int64)}`` with D = z (SAM3D's axis order)."""
    out = {}
    for s in slabs:
        img = np.ascontiguousarray(np.transpose(tissue.image[:, :, s.z0:s.z1], (2, 1, 0)))
        lab = np.ascontiguousarray(np.transpose(tissue.label[:, :, s.z0:s.z1], (2, 1, 0))).astype(np.int64)
        out[s.case_id] = (img, lab)
    return out


def mni152_spec(resolution: int = 2, patch_size: tuple[int, int, int] = (8, 128, 128)) -> DatasetSpec:
    """A :class:`~sam3dlib.data.specs.DatasetSpec` of the task (regions GM and WM) for the metrics and figures."""
    return DatasetSpec("mni152", 1, len(MNI_LABELS), dict(MNI_LABELS), {"GM": (1,), "WM": (2,)}, patch_size, 2,
                       "MRI", (float(resolution),) * 3)


def split_json(path: str | os.PathLike) -> dict:
    """The ``split.json`` :func:`write_mni152_task` wrote."""
    return json.loads(Path(path).read_text())


__all__ = ["MNI_LABELS", "MNITissue", "Slab", "mni152_slabs", "mni152_spec", "mni152_tissue", "slab_arrays",
           "split_json", "write_mni152_task"]
