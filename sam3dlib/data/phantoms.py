"""Built-in synthetic datasets written in each dataset's *raw* layout.

They go through the same readers, ``prepare``, training and evaluation as the real data:

* ``synapse``: abdominal CT (HU-like values, air/fat/soft tissue) with the 8 scored organs at their real
  label ids (spleen 1, kidneys 2/3, gallbladder 4, liver 6, stomach 7, aorta 8, pancreas 11), BTCV
  layout ``img/imgNNNN.nii.gz`` + ``label/labelNNNN.nii.gz``;
* ``acdc``: cine-MRI short-axis stacks, ED and ES frames with RV (1), ring-shaped MYO (2) and LV (3),
  ACDC layout ``patientPPP/patientPPP_frameFF[_gt].nii.gz`` + ``Info.cfg``;
* ``brats``: skull-stripped 4-channel MRI (FLAIR, T1w, T1gd, T2w; 4D, modality last) with nested
  edema (1) / non-enhancing core (2) / enhancing tumour (3), MSD layout;
* ``lung``: chest CT with two lungs and a small tumour (1), MSD layout.

Case ids are real ids from the shipped split (train and test cases) so ``get_split(...,
available=...)`` works unchanged. Each case has non-unit, anisotropic spacing, a flipped and offset
affine, and a couple of cases use a different spacing than the rest, so resampling and the
geometry bookkeeping are exercised. Everything is deterministic given ``seed``.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from sam3dlib.data.io import atomic_save_nifti
from sam3dlib.data.specs import DATASETS, get_spec
from sam3dlib.data.splits import raw_split
from sam3dlib.utils.errors import ConfigError
from sam3dlib.utils.fileio import atomic_write_json, atomic_write_text

PHANTOM_FILE = "PHANTOM.json"
SIZES = {"small": 1.0, "tiny": 0.5}
#: default number of cases and how many of them are training cases (the rest are test cases)
DEFAULT_CASES = {"synapse": (8, 5), "acdc": (12, 8), "brats": (7, 4), "lung": (6, 4)}


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised voxel-centre coordinates in [-1, 1] per axis (z, y, x)."""
    return tuple(((np.arange(n) + 0.5) / n * 2 - 1).reshape([-1 if i == a else 1 for i in range(3)])
                 for a, n in enumerate(shape))


def _ellipsoid(g, centre, radii) -> np.ndarray:
    return sum(((c - m) / r) ** 2 for c, m, r in zip(g, centre, radii)) <= 1.0


def _affine(spacing_zyx, rng: np.random.Generator) -> np.ndarray:
    """NIfTI affine for an (x, y, z) array: x flipped, y and z positive, non-zero offset."""
    sz, sy, sx = spacing_zyx
    aff = np.diag([-sx, sy, sz, 1.0])
    aff[:3, 3] = rng.uniform(-120, 120, 3).round(2)
    return aff


def scanner_nifti(arr_xyz: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A NIfTI image of ``arr_xyz`` (X x Y x Z [x C], stored as given) whose qform and sform are
    both ``affine`` with code 1 (scanner coordinates), as a scanner's converter writes them."""
    img = nib.Nifti1Image(arr_xyz, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _to_nifti(arr_zyx: np.ndarray, affine: np.ndarray, dtype) -> nib.Nifti1Image:
    return scanner_nifti(np.transpose(arr_zyx, (2, 1, 0) + tuple(range(3, arr_zyx.ndim))).astype(dtype), affine)


def _spacing(i: int, base: tuple[float, float, float], alt: tuple[float, float, float]) -> tuple[float, ...]:
    """Most cases use ``base``; every 4th case (index 2, 6, ...) uses ``alt``."""
    return alt if i % 4 == 2 else base


def _shape(fov_mm, spacing, scale: float) -> tuple[int, int, int]:
    return tuple(max(4, int(round(f * scale / s))) for f, s in zip(fov_mm, spacing))


def _jit(rng, c, r, dc=0.05, dr=0.1):
    return tuple(np.asarray(c) + rng.uniform(-dc, dc, 3)), tuple(np.asarray(r) * rng.uniform(1 - dr, 1 + dr, 3))


def _synapse_case(i: int, rng: np.random.Generator, scale: float):
    spacing = _spacing(i, (2.5, 0.8, 0.8), (3.0, 0.9, 0.9))
    shape = _shape((80.0, 76.8, 76.8), spacing, scale)  # 96 px at the 0.8 mm target
    g = _grid(shape)
    img = np.full(shape, -1000.0)
    lab = np.zeros(shape, np.uint8)
    body = _ellipsoid(g, (0, 0, 0), (10, 0.9, 0.95))
    img[body] = -150.0  # subcutaneous fat
    img[_ellipsoid(g, (0, 0.02, 0), (10, 0.8, 0.85))] = 40.0  # unlabelled soft tissue
    # (label, HU, centre z/y/x, radii z/y/x) in normalised coordinates, painted in this order
    organs = [(6, 100, (0.25, -0.15, -0.45), (0.6, 0.45, 0.38)),
              (4, -20, (-0.05, 0.1, -0.25), (0.25, 0.15, 0.13)),
              (7, -80, (0.35, -0.35, 0.25), (0.35, 0.22, 0.25)),
              (1, 200, (0.3, 0.15, 0.6), (0.35, 0.25, 0.2)),
              (11, 150, (-0.05, 0.1, 0.15), (0.18, 0.12, 0.35)),
              (2, 250, (-0.35, 0.45, -0.5), (0.3, 0.18, 0.16)),
              (3, 300, (-0.3, 0.45, 0.55), (0.3, 0.18, 0.16))]
    for lv, hu, c, r in organs:
        c, r = _jit(rng, c, r)
        m = _ellipsoid(g, c, r) & body
        img[m], lab[m] = hu, lv
    cy, cx = 0.35 + rng.uniform(-0.03, 0.03), 0.05 + rng.uniform(-0.03, 0.03)
    aorta = (((g[1] - cy) / 0.13) ** 2 + ((g[2] - cx) / 0.13) ** 2 <= 1) & np.ones(shape, bool)
    img[aorta], lab[aorta] = 380, 8
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 10, shape)
    return {"image": np.rint(img).astype(np.int16), "label": lab, "spacing": spacing}


def _acdc_case(i: int, rng: np.random.Generator, scale: float, es: bool):
    spacing = _spacing(i // 2, (6.0, 1.6, 1.6), (6.0, 1.8, 1.8))
    shape = _shape((96.0, 179.0, 179.0), spacing, scale)
    g = _grid(shape)
    amp = rng.uniform(0.8, 1.2)
    img = np.full(shape, 5.0)
    lab = np.zeros(shape, np.uint8)
    img[_ellipsoid(g, (0, 0, 0), (10, 0.85, 0.9))] = 120.0
    z = g[0][:, :, 0]  # (D, 1)
    taper = np.clip(1 - ((z + 0.1) / 0.95) ** 2, 0, 1) ** 0.5  # base (z < 0) wide, apex (z ~ 0.85) narrow
    taper = taper[:, :, None]
    lv_r, myo_t, rv_r = (0.12, 0.1, 0.16) if es else (0.17, 0.07, 0.21)
    lv_c = (0.0 + rng.uniform(-0.04, 0.04), 0.1 + rng.uniform(-0.04, 0.04))
    d_lv = np.sqrt((g[1] - lv_c[0]) ** 2 + (g[2] - lv_c[1]) ** 2)
    rv_c = (lv_c[0] - 0.02, lv_c[1] - 0.24)
    d_rv = np.sqrt((g[1] - rv_c[0]) ** 2 + (g[2] - rv_c[1]) ** 2)
    heart = taper > 0.05
    lv = heart & (d_lv <= lv_r * taper)
    myo = heart & (d_lv <= (lv_r + myo_t) * taper) & ~lv
    rv = heart & (d_rv <= rv_r * taper) & ~(d_lv <= (lv_r + myo_t + 0.02) * taper) & (taper > 0.3)
    for m, v, val in ((rv, 1, 300.0), (myo, 2, 55.0), (lv, 3, 420.0)):
        img[m], lab[m] = val, v
    img = ndimage.gaussian_filter(img, (0, 0.8, 0.8)) + rng.normal(0, 8, shape)
    return {"image": (np.abs(img) * amp).astype(np.float32), "label": lab, "spacing": spacing}


def _brats_case(i: int, rng: np.random.Generator, scale: float):
    spacing = _spacing(i, (1.0, 1.0, 1.0), (1.2, 1.0, 1.0))
    shape = _shape((48.0, 64.0, 64.0), spacing, scale)
    g = _grid(shape)
    brain = _ellipsoid(g, (0, 0, 0), (0.8, 0.85, 0.75))
    lab = np.zeros(shape, np.uint8)
    c = tuple(rng.uniform(-0.25, 0.25, 3))
    wt = _ellipsoid(g, c, tuple(0.42 * rng.uniform(0.9, 1.1, 3))) & brain
    tc = _ellipsoid(g, c, (0.3, 0.3, 0.3)) & brain
    core = _ellipsoid(g, c, (0.18, 0.18, 0.18)) & brain
    lab[wt], lab[tc], lab[core] = 1, 3, 2  # edema, enhancing ring, non-enhancing core
    #            FLAIR  T1w   T1gd  T2w
    tissue = {0: (300, 400, 400, 250), 1: (650, 330, 380, 560), 2: (420, 180, 220, 720), 3: (450, 300, 900, 480)}
    chans = []
    for ch in range(4):
        x = np.zeros(shape)
        x[brain] = tissue[0][ch]
        for v in (1, 2, 3):
            x[lab == v] = tissue[v][ch]
        x = ndimage.gaussian_filter(x, 0.7) + rng.normal(0, 15, shape)
        x[~brain] = 0.0  # skull-stripped: exact zeros outside the brain (exercises the nonzero crop)
        chans.append(np.clip(x, 0, None) * rng.uniform(0.8, 1.2))
    return {"image": np.stack(chans, axis=-1).astype(np.float32), "label": lab, "spacing": spacing}


def _lung_case(i: int, rng: np.random.Generator, scale: float):
    spacing = _spacing(i, (2.0, 0.9, 0.9), (2.5, 1.0, 1.0))
    shape = _shape((64.0, 86.0, 86.0), spacing, scale)
    g = _grid(shape)
    img = np.full(shape, -1000.0)
    lab = np.zeros(shape, np.uint8)
    img[_ellipsoid(g, (0, 0, 0), (10, 0.85, 0.95))] = -120.0
    img[_ellipsoid(g, (0, 0, 0), (10, 0.75, 0.85))] = 40.0
    lungs = [(0.0, 0.0, -0.42), (0.0, 0.0, 0.42)]
    for c in lungs:
        img[_ellipsoid(g, c, (0.85, 0.55, 0.33))] = -850.0
    side = lungs[int(rng.integers(2))]
    c = (side[0] + rng.uniform(-0.35, 0.35), side[1] + rng.uniform(-0.25, 0.25), side[2] + rng.uniform(-0.08, 0.08))
    tum = _ellipsoid(g, c, tuple(np.array([0.26, 0.17, 0.17]) * rng.uniform(0.85, 1.15, 3)))
    img[tum], lab[tum] = 30.0, 1
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 12, shape)
    return {"image": np.rint(img).astype(np.int16), "label": lab, "spacing": spacing}


def phantom_case_ids(dataset: str, n_cases: int | None = None) -> list[str]:
    """The real split ids a phantom of ``dataset`` uses (first training ids, then test ids)."""
    key = dataset.lower()
    n_default, n_train_default = DEFAULT_CASES[key]
    n = n_default if n_cases is None else int(n_cases)
    if n < 2:
        raise ConfigError(f"n_cases must be >= 2 (at least one train and one test case), got {n}")
    s = raw_split(key)
    n_train = max(1, min(n - 1, round(n * n_train_default / n_default)))
    if key == "acdc":  # whole patients: ED + ES frames
        tr = [c for p in sorted({c.split("_")[0] for c in s["train"]})[: max(1, n_train // 2)]
              for c in sorted(s["train"]) if c.startswith(p + "_")]
        te = [c for p in sorted({c.split("_")[0] for c in s["test"]})[: max(1, (n - len(tr)) // 2)]
              for c in sorted(s["test"]) if c.startswith(p + "_")]
        return tr + te
    tr = sorted(s["train"])[:n_train]
    n_test = n - n_train
    if key == "brats" and n_test >= 3:  # one case of the nnFormer 24-case test subset too
        return tr + sorted(s["test"])[: n_test - 1] + sorted(s["unused_or_internal_val"])[:1]
    return tr + sorted(s["test"])[:n_test]


def _msd_json(dataset: str, ids: list[str]) -> dict:
    spec = get_spec(dataset)
    modality = {"brats": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}}.get(dataset, {"0": "CT"})
    return {"name": f"sam3dlib phantom ({dataset})", "description": "synthetic, written by sam3dlib.data.phantoms",
            "tensorImageSize": "4D" if dataset == "brats" else "3D", "modality": modality,
            "labels": {str(k): v for k, v in spec.labels.items()}, "numTraining": len(ids), "numTest": 0,
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
            "test": []}


def write_phantom(dataset: str, out: Path, n_cases: int | None = None, seed: int = 0, size: str = "small") -> Path:
    """Write a synthetic ``dataset`` in its raw layout under ``out``.

    Args:
        dataset: ``synapse``, ``acdc``, ``brats`` or ``lung``.
        out: folder to write (created; existing phantom files are overwritten).
        n_cases: number of cases (ACDC: frames, two per patient); default per dataset
            (synapse 8, acdc 12, brats 7, lung 6).
        seed: makes the phantom deterministic.
        size: ``small`` (default, ~32 slices of ~96 px) or ``tiny`` (half size, for unit tests).

    Returns:
        The raw root to pass to ``prepare_dataset`` (= ``out``).
    """
    key = dataset.lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    scale = SIZES[size]
    out = Path(out)
    ids = phantom_case_ids(key, n_cases)
    for i, cid in enumerate(ids):
        rng = np.random.default_rng([seed, zlib.crc32(key.encode()), zlib.crc32(cid.encode())])
        if key == "synapse":
            case = _synapse_case(i, rng, scale)
            num = cid[3:]
            img_p, lab_p = out / "img" / f"img{num}.nii.gz", out / "label" / f"label{num}.nii.gz"
        elif key == "acdc":
            case = _acdc_case(i, rng, scale, es=not cid.endswith("frame01"))
            pdir = out / "training" / cid.split("_")[0]
            img_p, lab_p = pdir / f"{cid}.nii.gz", pdir / f"{cid}_gt.nii.gz"
        elif key == "brats":
            case = _brats_case(i, rng, scale)
            img_p, lab_p = out / "imagesTr" / f"{cid}.nii.gz", out / "labelsTr" / f"{cid}.nii.gz"
        else:
            case = _lung_case(i, rng, scale)
            img_p, lab_p = out / "imagesTr" / f"{cid}.nii.gz", out / "labelsTr" / f"{cid}.nii.gz"
        aff = _affine(case["spacing"], rng)
        atomic_save_nifti(_to_nifti(case["image"], aff, case["image"].dtype), img_p)
        atomic_save_nifti(_to_nifti(case["label"], aff, np.uint8), lab_p)
    if key == "acdc":
        for p in sorted({c.split("_")[0] for c in ids}):
            frames = sorted(int(c.split("frame")[1]) for c in ids if c.startswith(p + "_"))
            info = f"ED: {frames[0]}\nES: {frames[-1]}\nGroup: NOR\nHeight: 175.0\nNbFrame: 30\nWeight: 70.0\n"
            atomic_write_text(out / "training" / p / "Info.cfg", info)
    if key in ("brats", "lung"):
        atomic_write_json(out / "dataset.json", _msd_json(key, ids))
    atomic_write_json(out / PHANTOM_FILE, {"dataset": key, "seed": seed, "size": size, "case_ids": ids,
                                           "written_by": "sam3dlib.data.phantoms.write_phantom"})
    return out
