"""NIfTI input and output: one image reader, one label reader, one label writer.

Geometry rules (docs/DATA.md, "Geometry"):

* **spacing** of a voxel axis is the header's ``pixdim`` (what SimpleITK's ``GetSpacing`` and
  hence nnU-Net use); it is the spacing used for resampling. Without a qform, where ``pixdim``
  disagrees with the sform (``pixdim`` 0, which nibabel reads as 1.0, or other values), the
  sform's voxel sizes are used and a :class:`HeaderWarning` names the file (:func:`mm_geometry`);
* **units**: sizes and positions are millimetres. A header whose ``xyzt_units`` says micrometres
  or metres is converted to mm (affine and spacing), as ITK's NIfTI reader does; unknown units
  are taken as mm (ITK's and nibabel's convention);
* **data type**: a real-valued scalar per voxel (integers, floats). RGB, RGBA and complex files
  are refused with one line naming the file and its NIfTI data type;
* **orientation** of the voxel axes is read from nibabel's affine (sform if its code > 0, else
  qform if its code > 0, else the pixdim-only ANALYZE affine), as axis codes (``nib.aff2axcodes``);
* **the output header is the input's header**: qform, sform, their codes, quaternion, pixdim
  and units are carried over field by field (:data:`GEOMETRY_FIELDS`), so nibabel and
  SimpleITK read the same shape, spacing, origin and direction for a scan and its mask;
* **labels** are integers 0..255: float-stored values are accepted within :data:`LABEL_TOL`
  of an integer, anything else is refused with the file and the offending values.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import warnings
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from sam3dlib.utils.errors import InputNote, UserInputError
from sam3dlib.utils.fileio import atomic_write

#: file name endings of NIfTI files (the one list every reader and command uses)
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: largest distance of a float-stored label value from an integer that is still read as that integer
LABEL_TOL = 1e-3
#: label values are stored as uint8 (prepared store, predictions)
MAX_LABEL = 255
#: largest difference (mm) between two affines' entries for files to count as on the same voxel grid
AFFINE_TOL = 1e-3
#: header fields that fix a NIfTI file's geometry; carried from an input to its output
GEOMETRY_FIELDS = ("pixdim", "xyzt_units", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                   "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z")
_READ_ERRORS = (EOFError, OSError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError)


class DataFileError(UserInputError, ValueError):
    """A data file that cannot be read; the message names the file."""


class HeaderWarning(InputNote):
    """A header that was read with a correction (voxel sizes taken from the affine); names the file."""


#: ``xyzt_units`` spatial units -> factor to millimetres (ITK's NIfTI reader converts the same way;
#: ``unknown`` is read as mm, as ITK and nibabel do)
UNIT_TO_MM = {"unknown": 1.0, "mm": 1.0, "micron": 1e-3, "meter": 1e3}
#: relative tolerance between the header's ``pixdim`` and the affine's voxel sizes
SPACING_RTOL = 1e-3


def check_scalar_dtype(img: nib.Nifti1Image, path: Path) -> None:
    """A NIfTI file must hold one real number per voxel (each channel in its own file or the 4th axis).

    Raises:
        DataFileError: RGB/RGBA (structured), complex or otherwise non-numeric data, naming the
            file and the NIfTI data type.
    """
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "iufb":
        label = img.header.get_value_label("datatype") if hasattr(img.header, "get_value_label") else str(dtype)
        raise DataFileError(f"{path}: NIfTI data type {label} ({dtype}) is not a real-valued scalar image; save "
                            "one intensity (or label) per voxel, e.g. a single grey-level channel")


def unit_scale(header: nib.Nifti1Header, path: Path) -> float:
    """Factor from the header's spatial units (``xyzt_units``) to millimetres (:data:`UNIT_TO_MM`)."""
    unit = header.get_xyzt_units()[0]
    if unit not in UNIT_TO_MM:
        raise DataFileError(f"{path}: spatial unit {unit!r} in xyzt_units is not a length (mm, micron, meter)")
    return UNIT_TO_MM[unit]


def mm_geometry(img: nib.Nifti1Image, path: Path) -> tuple[np.ndarray, tuple[float, float, float], str | None]:
    """The affine (mm) and voxel sizes (mm) of a NIfTI image, and a note when the header was corrected.

    Voxel sizes are ``pixdim`` (SimpleITK's rule), scaled by :func:`unit_scale`. A qform (code > 0)
    is built from ``pixdim``, so with one ``pixdim`` stands (also when an sform disagrees: ACDC's
    unit sform beside its 0.8 x 0.8 x 2.5 mm qform). Without a qform, an sform (code > 0) is the
    only geometry besides ``pixdim``: where they disagree (norms of the sform's columns, relative
    :data:`SPACING_RTOL`; e.g. a ``pixdim`` of 0, which nibabel reads as 1.0) the sform's are used.
    """
    scale = unit_scale(img.header, path)
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3] *= scale
    pix = np.array([float(z) for z in img.header.get_zooms()[:3]]) * scale
    pix = np.concatenate([pix, np.ones(3 - len(pix))]) if len(pix) < 3 else pix
    from_affine = np.linalg.norm(affine[:3, :3], axis=0)
    sform_only = int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) > 0
    if not sform_only or np.allclose(pix, from_affine, rtol=SPACING_RTOL, atol=1e-6):
        return affine, (float(pix[0]), float(pix[1]), float(pix[2])), None
    note = (f"{path}: header voxel sizes (pixdim) {_fmt_sizes(pix)} mm disagree with its "
            f"sform {_fmt_sizes(from_affine)} mm (qform code 0) "
            "(a pixdim of 0 is read as 1.0); the affine's voxel sizes are used")
    return affine, (float(from_affine[0]), float(from_affine[1]), float(from_affine[2])), note


def _fmt_sizes(v) -> str:
    return "[" + ", ".join(f"{float(x):.4g}" for x in v) + "]"


def nifti_stem(name: str) -> str | None:
    """``name`` without ``.nii.gz``/``.nii``; None if it is not a NIfTI name (or hidden/macOS ``._`` junk)."""
    if name.startswith("."):
        return None
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


#: nnU-Net's channel files ``CASE_XXXX<ending>``: channel XXXX of case CASE (docs/DATA.md, "File names")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def channel_case_id(stem: str) -> tuple[str, int] | None:
    """nnU-Net's channel naming rule, the one place it is applied: ``"X_0001"`` -> ``("X", 1)``;
    ``None`` for a stem without a four-digit ``_XXXX`` suffix.

    Used by ``sam3d predict`` (which files form one case, and the output's name for a run on an
    nnU-Net v2 store) and ``sam3d evaluate`` (pairing ``X_0000`` predictions with ``X`` ground
    truths).
    """
    m = _CHANNEL_SUFFIX.match(stem)
    return (m.group("case"), int(m.group("ch"))) if m else None


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (by its name: ``.nii.gz`` or ``.nii``, not hidden)."""
    return nifti_stem(Path(path).name) is not None


def atomic_save_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Atomically write a NIfTI image (gzipped if ``path`` ends in ``.gz``)."""
    path = Path(path)
    bio = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map({"image": bio, "header": bio})
    img.to_file_map(file_map)
    raw = bio.getvalue()
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    atomic_write(path, lambda fh: fh.write(raw))


# ---------------------------------------------------------------- reading


@dataclass
class NiftiVolume:
    """One NIfTI file as read by :func:`read_nifti` / :func:`load_label_nifti`.

    Attributes:
        path: the file.
        data: the array in the file's own axis order (x, y, z[, channel]).
        affine: nibabel's affine (4 x 4, mm; sform > qform > pixdim), converted to mm.
        spacing: voxel sizes of the first three axes (mm), the header's ``pixdim`` (or the
            affine's where they disagree; :func:`mm_geometry`).
        geometry: the header's :data:`GEOMETRY_FIELDS` (JSON-ready), for :func:`save_label_like`.
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    geometry: dict

    @property
    def axcodes(self) -> str:
        """Orientation of the voxel axes, e.g. ``"LAS"`` (:func:`axcodes_of` :attr:`affine`)."""
        return axcodes_of(self.affine, self.path)


def axcodes_of(affine: np.ndarray, path: str | Path = "array") -> str:
    """Axis codes (``"LAS"``...) of the voxel axes of ``affine``: nibabel ``aff2axcodes``, each voxel
    axis assigned to the world axis it is closest to (oblique affines included).

    Raises:
        DataFileError: a degenerate affine (an axis without a direction), naming ``path``.
    """
    try:
        codes = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise DataFileError(f"{path}: affine has no orientation ({exc}):\n{_fmt_affine(affine)}") from exc
    if None in codes:
        raise DataFileError(f"{path}: degenerate affine, voxel axes without a direction:\n{_fmt_affine(affine)}")
    return "".join(codes)


def read_header_shape(path: str | Path) -> tuple[int, ...]:
    """Array shape of a NIfTI file, reading its header only."""
    return tuple(int(n) for n in _load(Path(path)).shape)


def read_axcodes(path: str | Path) -> str:
    """:func:`axcodes_of` a NIfTI file's affine, reading its header only."""
    path = Path(path)
    return axcodes_of(mm_geometry(_load(path), path)[0], path)


def read_header_note(path: str | Path) -> str | None:
    """Reading the header only: the correction :func:`read_nifti` makes to the file's voxel sizes
    (:func:`mm_geometry`), or None (``sam3d check-data`` lists these files)."""
    path = Path(path)
    return mm_geometry(_load(path), path)[2]


def header_geometry(header: nib.Nifti1Header) -> dict:
    """The :data:`GEOMETRY_FIELDS` of a NIfTI header as plain JSON values (exact float32 round trip)."""
    out = {}
    for name in GEOMETRY_FIELDS:
        v = np.asarray(header[name])
        out[name] = v.tolist() if v.ndim else v.item()
    return out


def _load(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        if path.is_symlink():
            raise DataFileError(f"{path}: a link to {os.readlink(path)}, which does not exist (a dangling link)")
        raise DataFileError(f"{path}: file not found")
    try:
        with nib.imageglobals.LoggingOutputSuppressor():  # its pixdim note names no file: see mm_geometry
            img = nib.load(str(path))
    except _READ_ERRORS as exc:
        raise DataFileError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataFileError(f"{path}: not a NIfTI file ({type(img).__name__})")
    check_scalar_dtype(img, path)
    return img


def read_nifti(path: str | Path, dtype: type | None = np.float32) -> NiftiVolume:
    """Read a NIfTI file with its geometry (the one image reader of the package).

    Args:
        path: the file.
        dtype: the array's dtype (scaling applied); None keeps the stored one.

    Raises:
        DataFileError: the file is missing (or a dangling link), truncated, not NIfTI, or not a
            real-valued scalar image (message names the file).

    Warns:
        HeaderWarning: the header's voxel sizes disagree with its affine (:func:`mm_geometry`).
    """
    path = Path(path)
    img = _load(path)
    try:
        arr = np.asarray(img.dataobj, dtype=dtype) if dtype is not None else np.asanyarray(img.dataobj)
    except _READ_ERRORS as exc:
        raise DataFileError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    affine, spacing, note = mm_geometry(img, path)
    if note:
        warnings.warn(note, HeaderWarning, stacklevel=2)
    return NiftiVolume(path, arr, affine, spacing, header_geometry(img.header))


def _fmt_affine(affine: np.ndarray) -> str:
    """The affine's top three rows on one line (error messages stay one line)."""
    text = np.array2string(np.asarray(affine, dtype=np.float64)[:3], precision=4, suppress_small=True)
    return " ".join(text.split())


def grid_problem(shape: Sequence[int], affine: np.ndarray, ref_shape: Sequence[int], ref_affine: np.ndarray,
                 names: tuple[str, str] = ("label", "image"), tol: float = AFFINE_TOL) -> str | None:
    """Why an array of ``shape``/``affine`` is not on the voxel grid ``ref_shape``/``ref_affine``, or None.

    The one "same grid" rule (label vs image, channel vs channel, prediction vs ground truth):
    equal shapes and affines equal within ``tol`` mm per entry. ``names`` name the two in the
    message, which shows both affines.
    """
    a_name, b_name = names
    shape, ref_shape = tuple(int(s) for s in shape), tuple(int(s) for s in ref_shape)
    if shape != ref_shape:
        return f"{a_name} shape {shape} differs from the {b_name}'s {ref_shape}"
    a, b = np.asarray(affine, dtype=np.float64), np.asarray(ref_affine, dtype=np.float64)
    if not np.allclose(a, b, atol=tol, rtol=0):
        return (f"{a_name} affine differs from the {b_name}'s by up to {float(np.abs(a - b).max()):.4g} mm "
                f"(tolerance {tol}); {a_name}: {_fmt_affine(a)}, {b_name}: {_fmt_affine(b)}")
    return None


def label_values_problem(values: np.ndarray, label_values: Collection[int] | None = None) -> str | None:
    """What is wrong with the distinct ``values`` of a label map, or None (the one label rule).

    Rule: finite; each within :data:`LABEL_TOL` of an integer; 0..:data:`MAX_LABEL`; and, when
    ``label_values`` is given (the dataset's labels), one of them.
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return "label contains NaN/inf"
    rounded = np.rint(values)
    off = values[np.abs(values - rounded) > LABEL_TOL]
    if off.size:
        return (f"{off.size} non-integer label value(s) (tolerance {LABEL_TOL}): "
                f"{', '.join(f'{v:.6g}' for v in off[:5])}{' ...' if off.size > 5 else ''}")
    ints = sorted(set(rounded.astype(np.int64).tolist()))
    if ints and (ints[0] < 0 or ints[-1] > MAX_LABEL):
        return f"label values must be 0..{MAX_LABEL}, found {ints[0]}..{ints[-1]}"
    if label_values is not None:
        bad = sorted(set(ints) - {int(v) for v in label_values})
        if bad:
            return f"unexpected label value(s) {bad} outside the dataset's label set {sorted(int(v) for v in label_values)}"
    return None


def load_label_nifti(path: str | Path, label_values: Collection[int] | None = None) -> NiftiVolume:
    """Read a label map: uint8 ``data`` in the file's own axis order (the one label reader).

    Used by ``prepare``, ``check-data``, ``evaluate``, the in-training/experiment evaluation and
    ``predict`` outputs read back, so every command reads the same integers. Trailing singleton
    axes are dropped; float-stored labels are accepted within :data:`LABEL_TOL` of an integer.

    Args:
        path: the label file.
        label_values: the dataset's label values; others are an error (None: any 0..255).

    Raises:
        DataFileError: unreadable file, not 3D, or values breaking :func:`label_values_problem`
            (the message names the file and the offending values).
    """
    vol = read_nifti(path, dtype=None)
    data = vol.data
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataFileError(f"{vol.path}: expected a 3D label map, got shape {data.shape}")
    problem = label_values_problem(np.unique(data), label_values)
    if problem:
        raise DataFileError(f"{vol.path}: {problem}")
    vol.data = (np.rint(data) if not np.issubdtype(data.dtype, np.integer) else data).astype(np.uint8)
    return vol


# ---------------------------------------------------------------- writing


def geometry_header(geometry: dict, shape: tuple[int, ...], dtype: type = np.uint8) -> nib.Nifti1Header:
    """A NIfTI-1 header for an array of ``shape`` carrying ``geometry`` (:func:`header_geometry`)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    for name in GEOMETRY_FIELDS:
        if name in geometry:
            if name == "pixdim":
                pix = np.asarray(geometry[name], dtype=np.float32)
                hdr[name][: len(pix)] = pix
            else:
                hdr[name] = geometry[name]
    return hdr


def affine_geometry(affine: np.ndarray) -> dict:
    """Geometry fields declaring ``affine`` as both qform and sform (code 1, scanner), units mm.

    For cases whose source header is unknown (nnU-Net v1 preprocessed input, old stores).
    """
    hdr = nib.Nifti1Header()
    hdr.set_qform(np.asarray(affine, dtype=np.float64), code=1)
    hdr.set_sform(np.asarray(affine, dtype=np.float64), code=1)
    hdr.set_xyzt_units("mm")
    return header_geometry(hdr)


def save_label_like(label: np.ndarray, geometry: dict, path: str | Path) -> Path:
    """Write a uint8 label map with another file's geometry (the one label writer).

    Args:
        label: ``X x Y x Z`` in the reference file's own axis order and shape.
        geometry: the reference's :func:`header_geometry` (``properties["nifti_header"]``).
        path: output file (``.nii.gz`` or ``.nii``), written atomically: nothing half-written.
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"save_label_like: expected a 3D label map, got shape {label.shape}")
    hdr = geometry_header(geometry, label.shape, np.uint8)
    img = nib.Nifti1Image(label.astype(np.uint8, copy=False), None, header=hdr)
    atomic_save_nifti(img, Path(path))
    return Path(path)
