"""`sam3d evaluate`: score NIfTI predictions against ground truths (per-case and summary CSV).

Cases are paired by case id taken from the file names (not by sorted position as in the
authors' scripts): ``_gt`` suffixes are stripped (ACDC ``patient001_frame01_gt``) and a
``label`` prefix becomes ``img`` (Synapse ``label0001`` vs ``img0001``).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from sam3dlib.evaluation import metrics
from sam3dlib.cli import UserError
from sam3dlib.data.io import load_label_nifti
from sam3dlib.utils.fileio import atomic_write_text, check_output_dir
from sam3dlib.data.specs import DATASETS, DatasetSpec, get_spec

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def case_id_from_filename(name: str) -> str:
    """Case id of a prediction or ground-truth file name.

    ``label0001.nii.gz`` -> ``img0001``; ``patient001_frame01_gt.nii.gz`` ->
    ``patient001_frame01``; ``BRATS_001.nii.gz`` -> ``BRATS_001``.
    """
    stem = name
    for suffix in NIFTI_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"_gt$", "", stem)
    return re.sub(r"^label(?=\d)", "img", stem)


def find_cases(folder: Path, role: str) -> dict[str, Path]:
    """``{case_id: path}`` of the NIfTI files directly in ``folder``."""
    if not folder.is_dir():
        raise UserError(f"{role} folder {folder} does not exist or is not a folder")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.endswith(NIFTI_SUFFIXES):
            continue
        case_id = case_id_from_filename(path.name)
        if case_id in cases:
            raise UserError(f"{role} files {cases[case_id].name} and {path.name} both map to case {case_id}")
        cases[case_id] = path
    if not cases:
        raise UserError(f"no .nii.gz/.nii files in {role} folder {folder}")
    return cases


def pair_cases(pred: dict[str, Path], gt: dict[str, Path]) -> list[tuple[str, Path, Path]]:
    """(case_id, pred path, gt path) for every case, or an error naming the unmatched cases."""
    only_pred, only_gt = sorted(set(pred) - set(gt)), sorted(set(gt) - set(pred))
    if only_pred or only_gt:
        parts = []
        if only_gt:
            parts.append(f"no prediction for {len(only_gt)} case(s): {', '.join(only_gt)}")
        if only_pred:
            parts.append(f"no ground truth for {len(only_pred)} case(s): {', '.join(only_pred)}")
        raise UserError("; ".join(parts))
    return [(case_id, pred[case_id], gt[case_id]) for case_id in sorted(gt)]


def resolve_spec(dataset: str | Path) -> DatasetSpec:
    """A paper dataset's spec by name, or a user dataset's from its prepared store folder."""
    if str(dataset) in DATASETS:
        return get_spec(str(dataset))
    if Path(dataset).is_dir():
        from sam3dlib.data.store import PreparedDataset

        return PreparedDataset(dataset).spec
    raise UserError(f"dataset {str(dataset)!r}: give one of {', '.join(DATASETS)} or a prepared store folder "
                    "(your own dataset, `sam3d prepare --raw` output)")


def evaluate_folders(
    dataset: str | DatasetSpec, pred_dir: Path, gt_dir: Path, convention: str = "paper"
) -> pd.DataFrame:
    """Per-case frame (see :func:`sam3dlib.evaluation.metrics.per_case_frame`) of two NIfTI folders."""
    spec = dataset if isinstance(dataset, DatasetSpec) else resolve_spec(dataset)
    results = {}
    for case_id, pred_path, gt_path in pair_cases(find_cases(pred_dir, "prediction"), find_cases(gt_dir, "ground-truth")):
        pred, _ = load_label_nifti(pred_path)
        gt, spacing = load_label_nifti(gt_path)
        if pred.shape != gt.shape:
            raise UserError(f"case {case_id}: prediction shape {pred.shape} differs from ground truth {gt.shape}")
        # paper: HD95 in voxels, as the authors' scripts (no spacing); strict/both: mm
        spacing_mm = None if convention == "paper" else spacing
        results[case_id] = metrics.evaluate_case(pred, gt, spec, spacing=spacing_mm, convention=convention)
    return metrics.per_case_frame(results)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score NIfTI predictions against ground truths (DSC, HD95)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", metavar="DATASET",
                   help=f"which dataset's regions to score: {', '.join(DATASETS)}, or the prepared store "
                        "folder of your own dataset (e.g. data/heart)")
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps (*.nii.gz)")
    p.add_argument("--gt", required=True, type=Path, help="folder of ground-truth label maps (*.nii.gz)")
    p.add_argument(
        "--convention",
        choices=metrics.EVALUATE_CONVENTIONS,
        default="paper",
        help="paper: HD95 in voxels, 0 for an empty mask (the authors' scripts); strict: HD95 in mm, "
        "NaN for an empty mask (left out, counted); both: paper's HD95 plus HD95_strict (default: paper)",
    )
    p.add_argument(
        "--brats-average",
        choices=metrics.BRATS_AVERAGES,
        default="five_region",
        help="BraTS 'average': over ET, TC, WT, ED, NET (the authors' script) or WT, ET, TC "
        "(default: five_region)",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for per_case.csv and summary.csv")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.dataset)
    check_output_dir(args.out, "--out folder")
    per_case = evaluate_folders(spec, args.pred, args.gt, args.convention)
    summary = metrics.aggregate(per_case, spec, brats_average=args.brats_average)
    atomic_write_text(args.out / "per_case.csv", per_case.to_csv(index=False))
    atomic_write_text(args.out / "summary.csv", summary.to_csv(index=False))
    n_cases = per_case["case_id"].nunique()
    units = {"paper": "HD95 in voxels", "strict": "HD95 in mm", "both": "HD95 in voxels, HD95_strict in mm"}
    print(f"{spec.name}: {n_cases} cases, convention {args.convention} ({units[args.convention]}), DSC in %")
    print(metrics.summary_table(summary).to_string(float_format=lambda v: f"{v:.2f}"))
    nan_counts = summary[(summary["n_nan"] > 0) & (summary["region"] != metrics.AVERAGE)]
    for row in nan_counts.itertuples():
        print(f"{row.metric} {row.region}: {row.n_nan} of {row.n_cases} cases NaN (empty mask), left out of the mean")
    print(f"wrote {args.out / 'per_case.csv'} and {args.out / 'summary.csv'}")
    return 0
