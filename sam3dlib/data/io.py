"""Small I/O helpers: atomic writes, NIfTI loading with clear errors."""
from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from sam3dlib.utils.fileio import atomic_save_npy as fileio_save_npy
from sam3dlib.utils.fileio import atomic_write
from sam3dlib.utils.errors import UserInputError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and ``os.replace``."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Atomically write ``array`` as a ``.npy`` file (loadable with ``mmap_mode='r'``)."""
    fileio_save_npy(path, np.ascontiguousarray(array))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars/arrays and paths allowed)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Atomically write a NIfTI image (gzipped if ``path`` ends in ``.gz``)."""
    path = Path(path)
    bio = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map({"image": bio, "header": bio})
    img.to_file_map(file_map)
    raw = bio.getvalue()
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    atomic_write_bytes(path, raw)


class DataFileError(UserInputError, ValueError):
    """A data file that cannot be read; the message names the file."""


def load_nifti(path: Path, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a NIfTI file.

    Returns:
        (array in the file's own axis order, 4x4 affine, voxel sizes of the first 3 axes).

    Raises:
        DataFileError: the file is missing, truncated or not NIfTI (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj, dtype=dtype)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return arr, np.asarray(img.affine, dtype=np.float64), zooms


def load_label_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Integer label map (the file's own axis order) and voxel spacing (mm) of a NIfTI file.

    Trailing singleton axes are dropped; float-stored labels are accepted when they hold whole
    numbers. This is how ``sam3d evaluate`` and the in-training evaluation read labels, so the
    two score identical arrays.

    Raises:
        DataFileError: unreadable file, not 3D, or non-integer label values (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise DataFileError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataFileError(f"{path.name}: expected a 3D label map, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.allclose(data, rounded):
            raise DataFileError(f"{path.name}: labels must be integers, got non-integer values (dtype {data.dtype})")
        data = rounded.astype(np.int16)
    return data, tuple(float(z) for z in img.header.get_zooms()[:3])
