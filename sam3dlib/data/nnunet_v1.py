"""nnU-Net v1 preprocessed folders (``sam3d_Data_plans_v2.1_stage*``) -> the prepared store.

The arrays are taken as nnU-Net v1 preprocessed them (not preprocessed again); the dataset-level
settings come from its plans file, the geometry of each case from its properties pickle.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sam3dlib.data.io import DataFileError, affine_geometry, axcodes_of
from sam3dlib.data.preprocess import separate_axis
from sam3dlib.data.readers import RawCase, load_pickle, nnunet_v1_plans, nnunet_v1_splits
from sam3dlib.data.specs import get_spec
from sam3dlib.data.store import case_paths
from sam3dlib.utils.fileio import atomic_save_npy, atomic_write_json

#: the raw layout name of such a folder (:func:`sam3dlib.data.readers.find_raw_cases`)
LAYOUT = "nnunet_v1"



def itk_affine(origin, spacing, direction) -> np.ndarray:
    """SimpleITK (LPS) origin/spacing/direction of an (x, y, z) image -> NIfTI (RAS) affine."""
    d = np.asarray(direction, float).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = d * np.asarray(spacing, float)[None, :]
    aff[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def nnunet_meta(dataset: str, cases: Sequence[RawCase], version: str) -> dict:
    """The store's ``dataset.json`` of an nnU-Net v1 folder: its plans' normalisation, spacing, splits."""
    spec = get_spec(dataset)
    stage = Path(cases[0].extra["stage_dir"])
    plans = nnunet_v1_plans(stage)
    first = load_pickle(Path(cases[0].extra["properties"]))
    orientation = axcodes_of(itk_affine(first["itk_origin"], first["itk_spacing"], first["itk_direction"]))
    target = [float(x) for x in first["spacing_after_resampling"]]
    norm: dict = {"scheme": "unknown", "note": f"no plans file next to {stage}; cannot preprocess new scans"}
    transpose_fwd = [0, 1, 2]
    if plans is not None:
        schemes = plans.get("normalization_schemes", {})
        ip = plans.get("dataset_properties", {}).get("intensityproperties") or {}
        transpose_fwd = list(plans.get("transpose_forward", [0, 1, 2]))
        if schemes.get(0) == "CT" and 0 in ip:
            norm = {"scheme": "CT", **{k: float(ip[0][k]) for k in ("percentile_00_5", "percentile_99_5", "mean", "sd")}}
        elif schemes:
            mask = plans.get("use_mask_for_norm", {})
            norm = {"scheme": "nonCT", "use_nonzero_mask": [bool(mask.get(c, False)) for c in range(spec.num_channels)]}
        norm["computed_on"] = "nnU-Net v1 plans file"
    splits = nnunet_v1_splits(stage)
    meta = {"dataset": spec.name, "num_channels": spec.num_channels, "num_classes": spec.num_classes,
            "labels": {str(k): v for k, v in spec.labels.items()}, "target_spacing": target,
            "target_spacing_source": f"spacing_after_resampling of {stage.name}", "normalization": norm,
            "nnunet_transpose_forward": transpose_fwd, "orientation": orientation,
            "orientation_source": "the first case's (nnU-Net v1 does not reorient; new scans are brought to it)",
            "sam3dlib_version": version}
    if splits:
        meta["nnunet_splits_final_fold0"] = {k: sorted(map(str, v)) for k, v in splits[0].items()}
        meta["nnunet_splits_final_note"] = ("ignored: the authors' trainers overwrite fold 0 with the hard-coded "
                                            "lists shipped in splits.json")
    return meta


def convert_case(args) -> str:
    """Copy one preprocessed case (``(case, meta, out)``) into the store with its properties."""
    case, meta, out = args
    src = case.images[0]
    try:
        arr = np.load(src)["data"] if src.suffix == ".npz" else np.load(src, mmap_mode="r")
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DataFileError(f"{src}: cannot read nnU-Net array ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 4 or arr.shape[0] != meta["num_channels"] + 1:
        raise DataFileError(f"{src}: expected (channels + seg) x Z x Y x X with {meta['num_channels'] + 1} "
                         f"channels, got shape {arr.shape}")
    p = load_pickle(Path(case.extra["properties"]))
    img = np.asarray(arr[:-1], dtype=np.float32)
    seg = np.asarray(arr[-1])
    lab = np.where(seg < 0, 0, seg).astype(np.uint8)
    tf = list(meta.get("nnunet_transpose_forward", [0, 1, 2]))
    sitk_zyx = list(p["original_size_of_raw_data"])
    affine = itk_affine(p["itk_origin"], p["itk_spacing"], p["itk_direction"])
    props = {"case_id": case.case_id, "original_shape": [int(s) for s in sitk_zyx[::-1]],
             "original_affine": affine.tolist(), "nifti_header": affine_geometry(affine),
             "original_orientation": axcodes_of(affine), "orientation": axcodes_of(affine),
             "original_spacing": [float(p["original_spacing"][t]) for t in tf],
             "transpose": [[2, 1, 0][t] for t in tf],
             "crop_bbox": [[int(a), int(b)] for a, b in (p["crop_bbox"][t] for t in tf)],
             "shape_after_crop": [int(p["size_after_cropping"][t]) for t in tf],
             "spacing_after_resampling": [float(s) for s in p["spacing_after_resampling"]],
             "shape_after_resampling": list(img.shape[1:]),
             "separate_axis": None, "image_files": [str(x) for x in p.get("list_of_data_files", [])],
             "label_file": str(p.get("seg_file")) if p.get("seg_file") else None, "nnunet_source": str(src)}
    props["separate_axis"] = separate_axis(props["original_spacing"], props["spacing_after_resampling"])
    paths = case_paths(out, case.case_id)
    atomic_save_npy(paths["image"], img)
    atomic_save_npy(paths["label"], lab)
    atomic_write_json(paths["properties"], props)
    return case.case_id


__all__ = ["LAYOUT", "convert_case", "itk_affine", "nnunet_meta"]
