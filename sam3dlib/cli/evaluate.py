"""`sam3d evaluate`: score NIfTI predictions against ground truths (per-case and summary CSV).

Cases are paired by case id taken from the file names (not by sorted position as in the
authors' scripts): ``_gt`` suffixes are stripped (ACDC ``patient001_frame01_gt``) and a
``label`` prefix becomes ``img`` (Synapse ``label0001`` vs ``img0001``). A prediction must lie
on its ground truth's voxel grid (same shape and affine); otherwise it is refused, or resampled
onto it (nearest neighbour) with ``--resample-to-gt``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sam3dlib.cli import UserError
from sam3dlib.data.specs import DATASETS, DatasetSpec, get_spec
from sam3dlib.evaluation import metrics
from sam3dlib.evaluation.evaluator import evaluate_folders
from sam3dlib.utils.fileio import atomic_write_csv, check_output_dir


def resolve_spec(dataset: str | Path) -> DatasetSpec:
    """A paper dataset's spec by name, or a user dataset's from its prepared store folder."""
    if str(dataset) in DATASETS:
        return get_spec(str(dataset))
    if Path(dataset).is_dir():
        from sam3dlib.data.store import PreparedDataset

        return PreparedDataset(dataset).spec
    raise UserError(f"dataset {str(dataset)!r}: give one of {', '.join(DATASETS)} or a prepared store folder "
                    "(your own dataset, `sam3d prepare --raw` output)")


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
        help="paper: HD95 in voxels, 0 when either mask is empty (the authors' scripts, as defined there); "
        "strict: HD95 in mm, a missed or spurious structure scores the image diagonal in mm and is counted, "
        "NaN only when both masks are empty (left out, counted); both: paper's HD95 plus HD95_strict "
        "(default: paper)",
    )
    p.add_argument("--resample-to-gt", action="store_true",
                   help="resample a prediction that is not on its ground truth's voxel grid onto it (nearest "
                   "neighbour) instead of refusing it")
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
    per_case = evaluate_folders(spec, args.pred, args.gt, args.convention, args.resample_to_gt)
    summary = metrics.aggregate(per_case, spec, brats_average=args.brats_average)
    atomic_write_csv(args.out / "per_case.csv", per_case)
    atomic_write_csv(args.out / "summary.csv", summary)
    n_cases = per_case["case_id"].nunique()
    units = {"paper": "the authors' scripts: HD95 in voxels, 0 for a missed structure",
             "strict": "HD95 in mm, a missed structure scores the image diagonal",
             "both": "HD95 as the authors' scripts in voxels, HD95_strict in mm"}
    print(f"{spec.name}: {n_cases} cases, convention {args.convention} ({units[args.convention]}), DSC in %")
    print(metrics.summary_table(summary).to_string(float_format=lambda v: f"{v:.2f}"))
    nan_counts = summary[(summary["n_nan"] > 0) & (summary["region"] != metrics.AVERAGE)]
    for row in nan_counts.itertuples():
        print(f"{row.metric} {row.region}: {row.n_nan} of {row.n_cases} cases NaN (both masks empty), "
              "left out of the mean")
    fails = summary[summary["metric"].isin(metrics.FAILURE_METRICS) & (summary["region"] != metrics.AVERAGE)
                    & (summary["mean"] > 0)]
    for row in fails.itertuples():
        print(f"{row.region}: {row.metric} in {round(row.mean * row.n_cases)} of {row.n_cases} cases "
              "(strict HD95 = image diagonal)")
    print(f"wrote {args.out / 'per_case.csv'} and {args.out / 'summary.csv'}")
    return 0
