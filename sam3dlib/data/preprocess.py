"""nnU-Net-v1-style preprocessing of one case and its inverse.

Steps (as nnU-Net v1 ``GenericPreprocessor``, which produced the paper's data):

1. read the NIfTI file(s) (spacing = ``pixdim``); flip/permute the voxel axes to the store's
   canonical orientation (``dataset.json`` ``orientation``, axis codes); transpose
   ``(x, y, z)`` to ``(z, y, x)`` (what SimpleITK's ``GetArrayFromImage`` gives);
2. crop to the bounding box of the nonzero region (any channel != 0, holes filled);
3. resample to the dataset's target spacing: images cubic (order 3), labels linear on one-hot
   (order 1); for anisotropic data (max/min spacing > 3) in-plane only, nearest (order 0) along
   the coarse axis;
4. normalise: CT clipped to the pooled foreground 0.5/99.5 percentiles, then z-scored with the
   pooled foreground mean/sd; MRI z-scored per case and channel (inside the nonzero mask, with
   0 outside, when ``use_nonzero_mask`` is set for that channel).

:func:`restore_label` inverts 3 and 2, the transpose and the reorientation, so a prediction
made on the prepared array lands on the original NIfTI grid; :func:`save_label_nifti` writes it
with the input's own header.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform
from scipy import ndimage

from sam3dlib.data.io import (
    DataFileError,
    affine_geometry,
    grid_problem,
    load_label_nifti,
    read_axcodes,
    read_nifti,
    save_label_like,
)

#: NIfTI (x, y, z) -> (z, y, x)
TRANSPOSE = (2, 1, 0)
ANISO_THRESHOLD = 3.0
#: the spacing rule (docs/DATA.md "Geometry"), recorded in every case's properties
SPACING_SOURCE = "pixdim (NIfTI header voxel sizes, as SimpleITK GetSpacing / nnU-Net)"


# ---------------------------------------------------------------- reading


def orientation_transform(from_codes: str, to_codes: str) -> np.ndarray:
    """nibabel orientation transform (3 x 2) taking voxel axes with ``from_codes`` to ``to_codes``."""
    return ornt_transform(axcodes2ornt(tuple(from_codes)), axcodes2ornt(tuple(to_codes)))


def reorient(array: np.ndarray, from_codes: str, to_codes: str) -> np.ndarray:
    """Flip/permute the first three axes of ``array`` from orientation ``from_codes`` to ``to_codes``.

    Only axis flips and permutations (no interpolation), so the round trip is exact.
    """
    if from_codes == to_codes:
        return array
    return apply_orientation(array, orientation_transform(from_codes, to_codes))


def canonical_orientation(image_files: Sequence[Path]) -> str:
    """A dataset's canonical orientation: the axis codes most of ``image_files`` have (ties: the
    first file's), so data stored uniformly is left exactly as it is. Reads headers only."""
    codes = Counter(read_axcodes(p) for p in image_files)
    if not codes:
        raise ValueError("canonical_orientation: no image file given")
    return codes.most_common(1)[0][0]


def read_image(image_paths: Sequence[Path] | Path, num_channels: int | None = None,
               orientation: str | None = None) -> tuple[np.ndarray, dict]:
    """Read one case's image as float32 ``C x Z x Y x X`` in ``orientation``, plus its geometry.

    ``image_paths`` is one file (3D, or 4D with the modality last as in MSD BraTS) or one file per
    channel (nnU-Net ``_0000``, ``_0001``, ...; each on the first file's grid).

    Args:
        orientation: axis codes (e.g. ``"LAS"``) the voxel axes are flipped/permuted to before the
            ``(x, y, z) -> (z, y, x)`` transpose (the store's ``dataset.json`` ``orientation``);
            None keeps the file's own.

    Returns:
        The image and the properties ``original_shape``, ``original_affine``,
        ``original_orientation``, ``orientation``, ``reoriented_shape`` (x, y, z after
        reorientation), ``original_spacing`` (z, y, x after reorientation; from ``pixdim``),
        ``spacing_source``, ``nifti_header`` (the first file's geometry fields), ``transpose``,
        ``image_files``.
    """
    paths = [Path(image_paths)] if isinstance(image_paths, (str, Path)) else [Path(p) for p in image_paths]
    if not paths:
        raise ValueError("read_image: no image file given")
    channels, first = [], None
    for p in paths:
        vol = read_nifti(p)
        arr = vol.data
        if arr.ndim == 4:
            chans = [arr[..., c] for c in range(arr.shape[3])]
        elif arr.ndim == 3:
            chans = [arr]
        elif arr.ndim == 2:
            raise DataFileError(f"{p}: a 2D image (shape {arr.shape}) was given where a 3D volume is expected; "
                             "SAM3D segments volumes (x, y, z), or 4D files with the modalities last")
        else:
            raise DataFileError(f"{p}: expected a 3D volume or a 4D image with the modalities last, got shape {arr.shape}")
        if min(chans[0].shape) < 2:
            raise DataFileError(f"{p}: a single slice (shape {arr.shape}): SAM3D needs a 3D volume with at least "
                             "2 voxels along every axis")
        if first is None:
            first = vol
            own = vol.axcodes
            target = orientation or own
        else:
            problem = grid_problem(chans[0].shape, vol.affine, first.data.shape[:3], first.affine,
                                   ("channel", paths[0].name))
            if problem:
                raise DataFileError(f"{p}: {problem}")
        channels += [np.transpose(reorient(c, own, target), TRANSPOSE) for c in chans]
    if num_channels is not None and len(channels) != num_channels:
        raise DataFileError(f"{paths[0]}: expected {num_channels} channel(s), found {len(channels)}")
    img = np.stack(channels).astype(np.float32, copy=False)
    t = orientation_transform(own, target)
    spacing_xyz = [0.0] * 3
    for axis, (new_axis, _) in enumerate(t):
        spacing_xyz[int(new_axis)] = first.spacing[axis]
    geom = {"original_shape": [int(s) for s in first.data.shape[:3]], "original_affine": first.affine.tolist(),
            "original_orientation": own, "orientation": target,
            "reoriented_shape": [int(s) for s in img.shape[1:][::-1]],
            "original_spacing": [round(float(spacing_xyz[i]), 6) for i in TRANSPOSE],
            "spacing_source": SPACING_SOURCE, "nifti_header": first.geometry, "transpose": list(TRANSPOSE),
            "image_files": [recorded_path(p) for p in paths]}
    return img, geom


def recorded_path(path: str | os.PathLike) -> str:
    """How a source file is recorded in a case's properties: absolute and resolved (links
    followed), so that a store's ``image_files``/``label_file`` survive a change of working
    directory (a store prepared with a relative ``--raw`` is used from anywhere)."""
    return str(Path(path).resolve())


def read_label(label_path: Path, properties: dict | None = None,
               label_values: Collection[int] | None = None) -> np.ndarray:
    """Read a label file (:func:`~sam3dlib.data.io.load_label_nifti`) as uint8 ``Z x Y x X``.

    Args:
        label_path: the label NIfTI.
        properties: the image's :func:`read_image` properties: the label must lie on the image's
            grid (shape and affine, :func:`~sam3dlib.data.io.grid_problem`) and is reoriented like it.
        label_values: the dataset's label set; other values are an error.
    """
    vol = load_label_nifti(label_path, label_values)
    lab = vol.data
    if properties is not None:
        problem = grid_problem(lab.shape, vol.affine, properties["original_shape"], properties["original_affine"])
        if problem:
            raise DataFileError(f"{label_path}: {problem}; the label does not lie on the image's voxel grid")
        lab = reorient(lab, properties["original_orientation"], properties["orientation"])
    return np.transpose(lab, TRANSPOSE)


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


#: the most voxels a resampled volume may have (2**30: 4 GiB per float32 channel; a whole-body CT
#: at 0.5 mm has ~0.3e9); more means the voxel sizes are wrong, not that the scan is large
MAX_RESAMPLED_VOXELS = 2**30


def check_resampled_size(shape: Sequence[int], channels: int, spacing: Sequence[float], target: Sequence[float],
                         path: str | Path) -> None:
    """Stop before allocating a resampled volume of absurd size (:data:`MAX_RESAMPLED_VOXELS`).

    Raises:
        DataFileError: naming the file, its voxel sizes, the target and the size it would take.
    """
    voxels = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if voxels > MAX_RESAMPLED_VOXELS:
        gib = voxels * max(1, channels) * 4 / 2**30
        raise DataFileError(
            f"{path}: resampling from voxel sizes {[round(float(x), 6) for x in spacing]} mm to "
            f"{[round(float(x), 6) for x in target]} mm would make a {tuple(int(s) for s in shape)} volume "
            f"({gib:.0f} GiB); the header's voxel sizes or units (xyzt_units) look wrong")


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
        raise DataFileError(f"normalization scheme {scheme!r} unknown (the store's dataset.json must give "
                         "'normalization': {'scheme': 'CT'|'nonCT'|'per_channel', ...})")
    if len(per_channel) < image.shape[0]:
        raise DataFileError(f"normalization has {len(per_channel)} channel entries for an image with "
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
              label_values: Collection[int] | None = None, orientation: str | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Steps 1-2: read (reoriented to ``orientation``) and crop to the nonzero box.

    Returns (image, label, properties). The label must lie on the image's grid and hold only
    ``label_values`` (if given).
    """
    img, props = read_image(image_paths, num_channels, orientation)
    lab = read_label(label_path, props, label_values) if label_path is not None else None
    if not np.all(np.isfinite(img)):
        raise DataFileError(f"{props['image_files'][0]}: image contains NaN/inf")
    bbox = nonzero_bbox(img)
    img = _crop(img, bbox)
    lab = _crop(lab, bbox) if lab is not None else None
    props.update(crop_bbox=bbox, shape_after_crop=list(img.shape[1:]),
                 label_file=recorded_path(label_path) if label_path is not None else None)
    return img, lab, props


def preprocess_case(image_paths: list[Path] | Path, meta: dict, label_path: Path | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess one case with the dataset-level settings of a store's ``meta``.

    Args:
        image_paths: the image file, or one file per channel.
        meta: a store's ``dataset.json`` (needs ``target_spacing`` [z, y, x], ``normalization``,
            ``num_channels``; ``orientation``, the store's canonical axis codes, when present),
            e.g. ``PreparedDataset(root).meta``.
        label_path: optional label file.

    Returns:
        ``(image float32 C x D x H x W, label uint8 D x H x W or None, properties)``.
    """
    for k in ("target_spacing", "normalization"):
        if k not in meta:
            raise DataFileError(f"store meta has no {k!r}; it must be a prepared store's dataset.json")
    labels = meta.get("labels")
    label_values = [int(k) for k in labels] if isinstance(labels, dict) and labels else None
    img, lab, props = crop_case(image_paths, label_path, meta.get("num_channels"), label_values,
                                meta.get("orientation"))
    spacing = props["original_spacing"]
    target = [float(t) for t in meta["target_spacing"]]
    shape = new_shape(img.shape[1:], spacing, target)
    check_resampled_size(shape, img.shape[0], spacing, target, props["image_files"][0])
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


def argmax_resampled(scores: np.ndarray, shape: Sequence[int], axis: int | None) -> np.ndarray:
    """``argmax`` over classes of ``K x Z x Y x X`` scores resampled to ``shape``, class by class.

    Equals ``np.argmax(resample_probabilities(scores, shape, axis), 0)`` (ties to the lower
    class) but holds one resampled class, the running maximum and the uint8 result instead of
    all ``K`` resampled classes: about 9 bytes per output voxel whatever ``K``.
    """
    out = np.zeros(tuple(shape), dtype=np.uint8)
    best = None
    for k in range(scores.shape[0]):
        p = _zoom(np.asarray(scores[k], dtype=np.float32), shape, 1, axis)
        if best is None:
            best = np.array(p, dtype=np.float32, copy=True)
            continue
        better = p > best
        out[better] = k
        np.maximum(best, p, out=best)
        del better, p
    return out


def restore_label(label_zyx: np.ndarray, properties: dict) -> np.ndarray:
    """Map a prediction on the prepared grid back to the original NIfTI array.

    Undoes resampling, cropping, the transpose and the reorientation, so the result is on the
    input file's own voxel grid whatever its storage order.

    Args:
        label_zyx: a label map ``D x H x W`` (resampled like labels: linear on one-hot, > 0.5),
            or class scores/probabilities ``K x D x H x W`` (resampled linearly class by class,
            then argmax, as nnU-Net's export; :func:`argmax_resampled`).
        properties: the case's properties (``PreparedDataset.properties`` or ``preprocess_case``).

    Returns:
        uint8 array in the original file's axis order and shape (0 outside the crop box).
    """
    crop_shape = tuple(properties["shape_after_crop"])
    axis = properties.get("separate_axis")
    if label_zyx.ndim == 4:
        lab = argmax_resampled(label_zyx, crop_shape, axis)
    elif label_zyx.ndim == 3:
        expected = properties.get("shape_after_resampling")
        if expected is not None and list(label_zyx.shape) != list(expected):
            raise ValueError(f"restore_label: label shape {label_zyx.shape} != prepared shape {tuple(expected)}")
        lab = resample_label(np.asarray(label_zyx).astype(np.uint8), crop_shape, axis)
    else:
        raise ValueError(f"restore_label: expected D x H x W or K x D x H x W, got shape {label_zyx.shape}")
    transpose = properties.get("transpose", list(TRANSPOSE))
    xyz_shape = properties.get("reoriented_shape", properties["original_shape"])
    out = np.zeros([int(xyz_shape[t]) for t in transpose], dtype=np.uint8)
    out[tuple(slice(b0, b1) for b0, b1 in properties["crop_bbox"])] = lab
    out = np.transpose(out, np.argsort(transpose))
    own = properties.get("original_orientation")
    return np.ascontiguousarray(reorient(out, properties.get("orientation", own), own) if own else out)


def save_label_nifti(label: np.ndarray, properties: dict, path: str | Path, prepared: bool = False) -> Path:
    """Write a label map as NIfTI carrying the input's header (:func:`~sam3dlib.data.io.save_label_like`).

    Args:
        label: a label map on the input file's own grid (shape ``original_shape``); with
            ``prepared=True`` a label map on the prepared grid; or class scores ``K x D x H x W``.
            Prepared-grid maps and scores go through :func:`restore_label` first. (A shape alone
            cannot tell the grids apart: a file stored z, y, x has the prepared axis order.)
        properties: the case's properties.
        path: the output file.

    Raises:
        ValueError: a label meant for the original grid does not have its shape.

    Properties without ``nifti_header`` (nnU-Net v1 input, older stores) get ``original_affine``
    as qform and sform.
    """
    label = np.asarray(label)
    if prepared or label.ndim == 4:
        label = restore_label(label, properties)
    elif list(label.shape) != [int(s) for s in properties["original_shape"]]:
        raise ValueError(f"save_label_nifti: label shape {label.shape} is not the input's {properties['original_shape']}; "
                         "pass prepared=True for a label on the prepared grid")
    geometry = properties.get("nifti_header") or affine_geometry(np.asarray(properties["original_affine"]))
    return save_label_like(label, geometry, path)
