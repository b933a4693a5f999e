"""The one evaluator of a folder (or list) of NIfTI predictions against ground-truth label files.

Used by ``sam3d evaluate`` and by the test-set evaluation of a run
(:func:`sam3dlib.pipeline.evaluate_run`), so both score the same arrays the same way:

* files are read by the one label reader (:func:`sam3dlib.data.io.load_label_nifti`: integer
  values within its tolerance, only the dataset's labels);
* cases are paired by case id taken from the file names (not by sorted position as in the
  authors' scripts): ``_gt`` suffixes are stripped (ACDC ``patient001_frame01_gt``) and a
  ``label`` prefix becomes ``img`` (Synapse ``label0001`` vs ``img0001``); a prediction named
  after an nnU-Net channel file (``X_0000``) pairs with the ground truth ``X`` when unambiguous;
* a prediction must lie on its ground truth's voxel grid (:func:`sam3dlib.data.io.grid_problem`:
  same shape, affines equal within 1e-3 mm); otherwise it is refused with both affines shown,
  or, with ``resample=True``, resampled onto the ground truth's grid by nearest neighbour;
* HD95 uses the ground truth's ``pixdim`` spacing where the convention is in mm.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sam3dlib.data.io import NiftiVolume, channel_case_id, grid_problem, load_label_nifti, nifti_stem
from sam3dlib.data.specs import DatasetSpec, get_spec
from sam3dlib.evaluation import metrics
from sam3dlib.utils.errors import UserInputError


class EvaluationError(UserInputError, ValueError):
    """Predictions and ground truths that cannot be scored together; the message says why."""


def case_id_from_filename(name: str) -> str:
    """Case id of a prediction or ground-truth file name.

    ``label0001.nii.gz`` -> ``img0001``; ``patient001_frame01_gt.nii.gz`` ->
    ``patient001_frame01``; ``BRATS_001.nii.gz`` -> ``BRATS_001``.
    """
    stem = nifti_stem(name) or name
    stem = re.sub(r"_gt$", "", stem)
    return re.sub(r"^label(?=\d)", "img", stem)


def find_cases(folder: str | os.PathLike, role: str) -> dict[str, Path]:
    """``{case_id: path}`` of the NIfTI files directly in ``folder``.

    Raises:
        EvaluationError: the folder is missing or empty, or two files map to one case id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{role} folder {folder} does not exist or is not a folder")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() or nifti_stem(path.name) is None:
            continue  # a dangling link is kept: reading it names it (links that resolve are followed)
        case_id = case_id_from_filename(path.name)
        if case_id in cases:
            raise EvaluationError(f"{role} files {cases[case_id].name} and {path.name} both map to case {case_id}")
        cases[case_id] = path
    if not cases:
        raise EvaluationError(f"no .nii.gz/.nii files in {role} folder {folder}")
    return cases


def _channel_named(pred: Mapping[str, Path], gt: Mapping[str, Path]) -> dict[str, Path]:
    """``pred`` with an nnU-Net ``X_0000`` prediction renamed ``X`` where that pairing is unambiguous:
    ``X`` is a ground truth without a prediction of its own (:func:`sam3dlib.data.io.channel_case_id`)."""
    renamed = dict(pred)
    for case_id in sorted(set(pred) - set(gt)):
        m = channel_case_id(case_id)
        if m and m[1] == 0 and m[0] in gt and m[0] not in renamed:
            renamed[m[0]] = renamed.pop(case_id)
    return renamed


def match_cases(pred: Mapping[str, Path], gt: Mapping[str, Path]
                ) -> tuple[dict[str, tuple[Path, Path]], list[str], list[str]]:
    """``(pairs, ground truths without a prediction, predictions without a ground truth)``.

    Paired by case id; a prediction ``X_0000`` (a one-channel nnU-Net input's name) pairs with the
    ground truth ``X`` only when unambiguous (no prediction ``X``, no ground truth ``X_0000``).
    """
    pred = _channel_named(pred, gt)
    only_pred, only_gt = sorted(set(pred) - set(gt)), sorted(set(gt) - set(pred))
    pairs = {case_id: (pred[case_id], gt[case_id]) for case_id in sorted(set(gt) & set(pred))}
    return pairs, only_gt, only_pred


def pair_cases(pred: Mapping[str, Path], gt: Mapping[str, Path]) -> dict[str, tuple[Path, Path]]:
    """``{case_id: (pred path, gt path)}`` for every case, or an error naming the unmatched cases
    (:func:`match_cases`)."""
    pairs, only_gt, only_pred = match_cases(pred, gt)
    if only_pred or only_gt:
        parts = []
        if only_gt:
            parts.append(f"no prediction for {len(only_gt)} case(s): {', '.join(only_gt)}")
        if only_pred:
            parts.append(f"no ground truth for {len(only_pred)} case(s): {', '.join(only_pred)}")
        raise EvaluationError("; ".join(parts))
    return pairs


def resample_to_grid(label: NiftiVolume, reference: NiftiVolume) -> np.ndarray:
    """``label``'s map on ``reference``'s voxel grid, nearest neighbour (0 outside ``label``'s field of view)."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    src = nib.Nifti1Image(label.data, label.affine)
    out = resample_from_to(src, (reference.data.shape, reference.affine), order=0, mode="constant", cval=0)
    return np.asarray(out.dataobj).astype(np.uint8)


def paired_arrays(case_id: str, pred_path: str | os.PathLike, gt_path: str | os.PathLike, spec: DatasetSpec,
                  resample: bool = False) -> tuple[np.ndarray, NiftiVolume]:
    """The prediction's label map on the ground truth's grid, and the ground truth.

    Raises:
        EvaluationError: the two are on different grids (both affines shown) and ``resample`` is off.
        DataFileError: a file is unreadable or holds values that are not the dataset's labels.
    """
    pred = load_label_nifti(pred_path, spec.label_values)
    gt = load_label_nifti(gt_path, spec.label_values)
    problem = grid_problem(pred.data.shape, pred.affine, gt.data.shape, gt.affine, ("prediction", "ground truth"))
    if problem is None:
        return pred.data, gt
    if not resample:
        raise EvaluationError(
            f"case {case_id}: {pred.path} is not on the voxel grid of {gt.path}: {problem}. Comparing the arrays "
            "would score different places; predict on the ground truth's grid, or resample the prediction "
            "(nearest neighbour) with --resample-to-gt / resample=True")
    return resample_to_grid(pred, gt), gt


def evaluate_pairs(pairs: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]], dataset: str | DatasetSpec,
                   convention: str = "paper", resample: bool = False) -> pd.DataFrame:
    """Per-case frame (:func:`sam3dlib.evaluation.metrics.per_case_frame`) of ``{case_id: (pred, gt)}``.

    Args:
        pairs: prediction and ground-truth file per case.
        dataset: the dataset (name or spec) whose regions are scored.
        convention: ``paper`` (HD95 in voxels, the authors' scripts), ``strict`` or ``both``
            (HD95 in mm from the ground truth's spacing; see :mod:`sam3dlib.evaluation.metrics`).
        resample: resample a prediction on another grid onto the ground truth's (nearest
            neighbour) instead of refusing it.
    """
    spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
    results = {}
    for case_id, (pred_path, gt_path) in pairs.items():
        pred, gt = paired_arrays(case_id, pred_path, gt_path, spec, resample)
        # paper: HD95 in voxels, as the authors' scripts (no spacing); strict/both: mm
        spacing = None if convention == "paper" else gt.spacing
        results[case_id] = metrics.evaluate_case(pred, gt.data, spec, spacing=spacing, convention=convention)
    return metrics.per_case_frame(results)


def evaluate_folders(dataset: str | DatasetSpec, pred_dir: str | os.PathLike, gt_dir: str | os.PathLike,
                     convention: str = "paper", resample: bool = False) -> pd.DataFrame:
    """:func:`evaluate_pairs` of the cases of two NIfTI folders, paired by case id."""
    pairs = pair_cases(find_cases(pred_dir, "prediction"), find_cases(gt_dir, "ground-truth"))
    return evaluate_pairs(pairs, dataset, convention, resample)
