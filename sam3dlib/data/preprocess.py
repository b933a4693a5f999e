"""nnU-Net-v1-style preprocessing of one case and its inverse.

Steps (as nnU-Net v1 ``GenericPreprocessor``, which produced the paper's data):

1. read the NIfTI file(s); the array is transposed from NIfTI ``(x, y, z)`` to ``(z, y, x)``
   (what SimpleITK's ``GetArrayFromImage`` gives; no reorientation);
2. crop to the bounding box of the nonzero region (any channel != 0, holes filled);
3. resample to the dataset's target spacing: images cubic (order 3), labels linear on one-hot
   (order 1); for anisotropic data (max/min spacing > 3) in-plane only, nearest (order 0) along
   the coarse axis;
4. normalise: CT clipped to the pooled foreground 0.5/99.5 percentiles, then z-scored with the
   pooled foreground mean/sd; MRI z-scored per case and channel (inside the nonzero mask, with
   0 outside, when ``use_nonzero_mask`` is set for that channel).

:func:`restore_label` inverts 3 and 2 and the transpose, so a prediction made on the prepared
array lands on the original NIfTI grid.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from sam3dlib.data.io import atomic_save_nifti, load_nifti

#: NIfTI (x, y, z) -> (z, y, x)
TRANSPOSE = (2, 1, 0)
ANISO_THRESHOLD = 3.0
#: largest difference (mm) between an image's and its label's affine entries
AFFINE_TOL = 1e-3


# ---------------------------------------------------------------- reading


def read_image(image_paths: Sequence[Path] | Path, num_channels: int | None = None) -> tuple[np.ndarray, dict]:
    """Read one case's image as float32 ``C x Z x Y x X`` plus its geometry.

    ``image_paths`` is one file (3D, or 4D with the modality last as in MSD BraTS) or one file per
    channel (nnU-Net ``_0000``, ``_0001``, ...).
    """
    paths = [Path(image_paths)] if isinstance(image_paths, (str, Path)) else [Path(p) for p in image_paths]
    if not paths:
        raise ValueError("read_image: no image file given")
    channels, affine, zooms, shape = [], None, None, None
    for p in paths:
        arr, aff, z = load_nifti(p)
        if arr.ndim == 4:
            chans = [arr[..., c] for c in range(arr.shape[3])]
        elif arr.ndim == 3:
            chans = [arr]
        elif arr.ndim == 2:
            raise ValueError(f"{p}: a 2D image (shape {arr.shape}) was given where a 3D volume is expected; "
                             "SAM3D segments volumes (x, y, z), or 4D files with the modalities last")
        else:
            raise ValueError(f"{p}: expected a 3D volume or a 4D image with the modalities last, got shape {arr.shape}")
        if min(chans[0].shape) < 2:
            raise ValueError(f"{p}: a single slice (shape {arr.shape}): SAM3D needs a 3D volume with at least "
                             "2 voxels along every axis")
        if affine is None:
            affine, zooms, shape = aff, z, chans[0].shape
        elif chans[0].shape != shape:
            raise ValueError(f"{p}: shape {chans[0].shape} differs from {paths[0].name}'s {shape}")
        channels += [np.transpose(c, TRANSPOSE) for c in chans]
    if num_channels is not None and len(channels) != num_channels:
        raise ValueError(f"{paths[0]}: expected {num_channels} channel(s), found {len(channels)}")
    img = np.stack(channels).astype(np.float32)
    geom = {"original_shape": [int(s) for s in shape], "original_affine": np.asarray(affine).tolist(),
            "original_spacing": [round(float(zooms[t]), 6) for t in TRANSPOSE], "transpose": list(TRANSPOSE),
            "image_files": [str(p) for p in paths]}
    return img, geom


def read_label(label_path: Path, shape_xyz: Sequence[int] | None = None, affine: np.ndarray | None = None,
               label_values: Collection[int] | None = None) -> np.ndarray:
    """Read a label file as uint8 ``Z x Y x X`` (values rounded; negative or >255 is an error).

    Args:
        label_path: the label NIfTI.
        shape_xyz: the image's array shape the label must have.
        affine: the image's affine the label's must equal (within :data:`AFFINE_TOL` mm).
        label_values: the dataset's label set; other values are an error.
    """
    arr, laff, _ = load_nifti(label_path)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{label_path}: expected a 3D label map, got shape {arr.shape}")
    if shape_xyz is not None and tuple(arr.shape) != tuple(shape_xyz):
        raise ValueError(f"{label_path}: label shape {arr.shape} differs from the image's {tuple(shape_xyz)}")
    if affine is not None and not np.allclose(laff, np.asarray(affine, dtype=np.float64), atol=AFFINE_TOL, rtol=0):
        worst = float(np.abs(laff - np.asarray(affine, dtype=np.float64)).max())
        raise ValueError(f"{label_path}: label affine differs from the image's affine (by up to {worst:.4g} mm); "
                         "the label does not lie on the image's voxel grid")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{label_path}: label contains NaN/inf")
    lab = np.rint(arr)
    if lab.min() < 0 or lab.max() > 255:
        raise ValueError(f"{label_path}: label values outside 0..255 ({lab.min()}..{lab.max()})")
    if label_values is not None:
        bad = sorted(set(np.unique(lab).astype(int).tolist()) - {int(v) for v in label_values})
        if bad:
            raise ValueError(f"{label_path}: label value(s) {bad} outside the dataset's label set "
                             f"{sorted(int(v) for v in label_values)}")
    return np.transpose(lab.astype(np.uint8), TRANSPOSE)


# ---------------------------------------------------------------- cropping


def nonzero_bbox(image: np.ndarray) -> list[list[int]]:
    """Bounding box ``[[z0, z1], [y0, y1], [x0, x1]]`` (half-open) of the nonzero region of ``C x Z x Y x X``."""
    mask = ndimage.binary_fill_holes(np.any(image != 0, axis=0))
    if not mask.any():
        return [[0, int(s)] for s in image.shape[1:]]
    bbox = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.where(mask.any(axis=other))[0]
        bbox.append([int(idx[0]), int(idx[-1]) + 1])
    return bbox


def _crop(a: np.ndarray, bbox: list[list[int]]) -> np.ndarray:
    sl = tuple(slice(b0, b1) for b0, b1 in bbox)
    return a[(Ellipsis,) + sl]


# ---------------------------------------------------------------- resampling


def separate_axis(spacing: Sequence[float], target: Sequence[float]) -> int | None:
    """The coarse axis that is resampled with order 0 (nnU-Net's ``get_do_separate_z``), or ``None``."""
    for sp in (spacing, target):
        sp = np.asarray(sp, float)
        if sp.max() / sp.min() > ANISO_THRESHOLD:
            return int(np.argmax(sp))
    return None


def new_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling ``shape`` from ``spacing`` to ``target`` (rounded, at least 1)."""
    return tuple(max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, target))


def _zoom(a: np.ndarray, shape: Sequence[int], order: int, axis: int | None, order_axis: int = 0) -> np.ndarray:
    """Resize a 3D float array to ``shape`` (pixel-area aligned, edge mode); ``axis`` uses ``order_axis``."""
    if tuple(a.shape) == tuple(shape):
        return a
    factors = [n / o for n, o in zip(shape, a.shape)]
    if axis is None:
        return ndimage.zoom(a, factors, order=order, mode="nearest", grid_mode=True)
    inplane = [1.0 if i == axis else f for i, f in enumerate(factors)]
    along = [factors[i] if i == axis else 1.0 for i in range(3)]
    out = a
    if any(f != 1.0 for f in inplane):
        out = ndimage.zoom(out, inplane, order=order, mode="nearest", grid_mode=True)
    if along[axis] != 1.0:
        out = ndimage.zoom(out, along, order=order_axis, mode="nearest", grid_mode=True)
    return out


def resample_image(image: np.ndarray, shape: Sequence[int], axis: int | None) -> np.ndarray:
    """Resample ``C x Z x Y x X`` to ``shape`` with order 3 (order 0 along ``axis``)."""
    return np.stack([_zoom(c.astype(np.float32), shape, 3, axis) for c in image]).astype(np.float32)


def resample_label(label: np.ndarray, shape: Sequence[int], axis: int | None) -> np.ndarray:
    """Resample a ``Z x Y x X`` label map: order 1 on each one-hot channel (order 0 along ``axis``), > 0.5 wins."""
    if tuple(label.shape) == tuple(shape):
        return label
    out = np.zeros(shape, dtype=label.dtype)
    for v in np.unique(label):
        if v == 0:
            continue
        m = _zoom((label == v).astype(np.float32), shape, 1, axis)
        out[m >= 0.5] = v
    return out


def resample_probabilities(probs: np.ndarray, shape: Sequence[int], axis: int | None) -> np.ndarray:
    """Resample ``K x Z x Y x X`` class scores linearly (order 0 along ``axis``)."""
    return np.stack([_zoom(p.astype(np.float32), shape, 1, axis) for p in probs])


# ---------------------------------------------------------------- normalisation


def _normalise_ct(channel: np.ndarray, norm: dict) -> None:
    """Clip to the pooled foreground 0.5/99.5 percentiles, z-score with the pooled mean/sd (in place)."""
    lo, hi, mean, sd = (float(norm[k]) for k in ("percentile_00_5", "percentile_99_5", "mean", "sd"))
    np.clip(channel, lo, hi, out=channel)
    channel -= mean
    channel /= max(sd, 1e-8)


def _normalise_zscore(channel: np.ndarray, nonzero: np.ndarray | None) -> tuple[float, float]:
    """Per-case z-score (in place); inside ``nonzero`` only (0 outside) when given. Returns (mean, sd)."""
    if nonzero is not None:
        vals = channel[nonzero]
        m, s = (float(vals.mean()), float(vals.std())) if vals.size else (0.0, 1.0)
        channel[...] = (channel - m) / (s + 1e-8)
        channel[~nonzero] = 0
    else:
        m, s = float(channel.mean()), float(channel.std())
        channel[...] = (channel - m) / (s + 1e-8)
    return m, s


def normalise(image: np.ndarray, norm: dict, nonzero: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Normalise ``C x Z x Y x X`` in place per ``norm`` (the store meta's ``normalization``).

    Schemes: ``CT`` (every channel with the dataset's CT statistics), ``nonCT`` (per-case
    z-score of every channel, inside the nonzero mask where ``use_nonzero_mask[c]``) and
    ``per_channel`` (``channels[c]`` is a ``CT`` or ``nonCT`` entry for channel c; user datasets).
    """
    stats: dict = {}
    scheme = norm.get("scheme")
    if scheme == "CT":
        _normalise_ct(image, norm)
        return image, stats
    if scheme == "nonCT":
        use_mask = norm.get("use_nonzero_mask", [False] * image.shape[0])
        per_channel = [{"scheme": "nonCT", "use_nonzero_mask": bool(m)} for m in use_mask]
    elif scheme == "per_channel":
        per_channel = list(norm.get("channels", []))
    else:
        raise ValueError(f"normalization scheme {scheme!r} unknown (the store's dataset.json must give "
                         "'normalization': {'scheme': 'CT'|'nonCT'|'per_channel', ...})")
    if len(per_channel) < image.shape[0]:
        raise ValueError(f"normalization has {len(per_channel)} channel entries for an image with "
                         f"{image.shape[0]} channels")
    stats["channel_mean"], stats["channel_std"] = [], []
    for c in range(image.shape[0]):
        ch = per_channel[c]
        if ch.get("scheme") == "CT":
            _normalise_ct(image[c], ch)
            m, s = float(ch["mean"]), float(ch["sd"])
        else:
            m, s = _normalise_zscore(image[c], nonzero if ch.get("use_nonzero_mask") and nonzero is not None else None)
        stats["channel_mean"].append(m)
        stats["channel_std"].append(s)
    return image, stats


# ---------------------------------------------------------------- the case


def crop_case(image_paths: Sequence[Path] | Path, label_path: Path | None, num_channels: int | None = None,
              label_values: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Steps 1-2: read and crop to the nonzero box. Returns (image, label, properties).

    The label must have the image's shape and affine and (if given) only ``label_values``.
    """
    img, props = read_image(image_paths, num_channels)
    lab = (read_label(label_path, props["original_shape"], props["original_affine"], label_values)
           if label_path is not None else None)
    if not np.all(np.isfinite(img)):
        raise ValueError(f"{props['image_files'][0]}: image contains NaN/inf")
    bbox = nonzero_bbox(img)
    img = _crop(img, bbox)
    lab = _crop(lab, bbox) if lab is not None else None
    props.update(crop_bbox=bbox, shape_after_crop=list(img.shape[1:]),
                 label_file=str(label_path) if label_path is not None else None)
    return img, lab, props


def preprocess_case(image_paths: list[Path] | Path, meta: dict, label_path: Path | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess one case with the dataset-level settings of a store's ``meta``.

    Args:
        image_paths: the image file, or one file per channel.
        meta: a store's ``dataset.json`` (needs ``target_spacing`` [z, y, x], ``normalization``,
            ``num_channels``), e.g. ``PreparedDataset(root).meta``.
        label_path: optional label file.

    Returns:
        ``(image float32 C x D x H x W, label uint8 D x H x W or None, properties)``.
    """
    for k in ("target_spacing", "normalization"):
        if k not in meta:
            raise ValueError(f"store meta has no {k!r}; it must be a prepared store's dataset.json")
    labels = meta.get("labels")
    label_values = [int(k) for k in labels] if isinstance(labels, dict) and labels else None
    img, lab, props = crop_case(image_paths, label_path, meta.get("num_channels"), label_values)
    spacing = props["original_spacing"]
    target = [float(t) for t in meta["target_spacing"]]
    shape = new_shape(img.shape[1:], spacing, target)
    axis = separate_axis(spacing, target)
    nonzero = np.any(img != 0, axis=0)
    img = resample_image(img, shape, axis)
    if lab is not None:
        lab = resample_label(lab, shape, axis)
    nonzero = _zoom(nonzero.astype(np.float32), shape, 0, None) > 0.5
    img, stats = normalise(img, meta["normalization"], nonzero)
    props.update(spacing_after_resampling=target, shape_after_resampling=list(shape), separate_axis=axis,
                 normalization_case=stats)
    return img.astype(np.float32), lab, props


def restore_label(label_zyx: np.ndarray, properties: dict) -> np.ndarray:
    """Map a prediction on the prepared grid back to the original NIfTI array.

    Args:
        label_zyx: a label map ``D x H x W`` (resampled like labels: linear on one-hot, > 0.5),
            or class scores/probabilities ``K x D x H x W`` (resampled linearly per class, then
            argmax, as nnU-Net's export does).
        properties: the case's properties (``PreparedDataset.properties`` or ``preprocess_case``).

    Returns:
        uint8 array in the original file's axis order and shape (0 outside the crop box).
    """
    crop_shape = tuple(properties["shape_after_crop"])
    axis = properties.get("separate_axis")
    if label_zyx.ndim == 4:
        lab = np.argmax(resample_probabilities(np.asarray(label_zyx), crop_shape, axis), axis=0).astype(np.uint8)
    elif label_zyx.ndim == 3:
        expected = properties.get("shape_after_resampling")
        if expected is not None and list(label_zyx.shape) != list(expected):
            raise ValueError(f"restore_label: label shape {label_zyx.shape} != prepared shape {tuple(expected)}")
        lab = resample_label(np.asarray(label_zyx).astype(np.uint8), crop_shape, axis)
    else:
        raise ValueError(f"restore_label: expected D x H x W or K x D x H x W, got shape {label_zyx.shape}")
    transpose = properties.get("transpose", list(TRANSPOSE))
    full_zyx = [int(properties["original_shape"][t]) for t in transpose]
    out = np.zeros(full_zyx, dtype=np.uint8)
    out[tuple(slice(b0, b1) for b0, b1 in properties["crop_bbox"])] = lab
    return np.transpose(out, np.argsort(transpose))


def save_label_nifti(label: np.ndarray, properties: dict, path: str | Path) -> Path:
    """Write a label map as NIfTI with the original affine.

    ``label`` is either already on the original grid (shape ``original_shape``) or on the prepared
    grid / class scores, in which case :func:`restore_label` is applied first.
    """
    label = np.asarray(label)
    if label.ndim != 3 or list(label.shape) != [int(s) for s in properties["original_shape"]]:
        label = restore_label(label, properties)
    img = nib.Nifti1Image(label.astype(np.uint8), np.asarray(properties["original_affine"], dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    atomic_save_nifti(img, Path(path))
    return Path(path)
