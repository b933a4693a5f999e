"""``sam3d check-data [DATASET] PATH``: report layout problems (missing cases, shape/affine mismatch,
unexpected labels, wrong channel count, NaN/inf, unreadable files); exit code 1 if any.
Without DATASET, PATH is your own dataset (MSD / nnU-Net v2 raw folder, or its prepared store)."""
from __future__ import annotations

import argparse
import sys

from sam3dlib.data.specs import DATASETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="check raw data or a prepared store for problems", description=__doc__)
    p.add_argument("dataset", nargs="?", choices=DATASETS, help="a paper dataset; leave out for your own")
    p.add_argument("path", help="raw data root or prepared store")
    p.add_argument("--no-missing", action="store_true", help="do not report split cases that are absent")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.cli._errors import warnings_as_lines
    from sam3dlib.data.check import check_dataset, check_user_dataset
    from sam3dlib.data.user_dataset import UnlistedImageWarning

    if args.dataset is None:
        with warnings_as_lines("check-data", UnlistedImageWarning):
            problems = check_user_dataset(args.path)
    else:
        problems = check_dataset(args.dataset, args.path, expect_all=False if args.no_missing else None)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {args.path}", file=sys.stderr)
        return 1
    print(f"{args.path}: no problems found")
    return 0
