"""``sam3d prepare``: raw data -> prepared store (resumable).

Examples::

    sam3d prepare synapse --raw /data/RawData/Training --out data/synapse     # a paper dataset
    sam3d prepare --raw /data/Task02_Heart --out data/heart                   # your own (MSD / nnU-Net v2)
    sam3d prepare --raw /data/Task02_Heart --out data/heart --plan patch_size=16,128,128 --plan memory_gb=4

Every store is a raw folder plus a plan, stored in ``<out>/dataset.json``: a paper dataset's is
committed with sam3dlib; your own dataset is planned from its data (target spacing, normalisation,
crop and batch size, regions, 5 folds; see docs/DATA.md) and the plan is printed.
"""
from __future__ import annotations

import argparse
import re

from sam3dlib.cli import UserError
from sam3dlib.data.specs import DATASETS

#: Ctrl-C: what stopped and how to go on (``sam3d`` prints it as one line)
INTERRUPTED = ("prepare interrupted; the cases written so far are complete and the store is unfinished: rerun the "
               "same command to resume (finished cases are skipped)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert raw data (a paper dataset, or your own in the MSD / nnU-Net v2 "
                       "layout) into a prepared store", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", nargs="?", choices=DATASETS,
                   help="a paper dataset; leave out for your own dataset (name and labels from its dataset.json)")
    p.add_argument("--raw", required=True, help="raw data root (layout autodetected)")
    p.add_argument("--out", help="store folder (default data/DATASET, or data/<name in dataset.json>)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default 0 = in-process)")
    p.add_argument("--target-spacing", nargs="+", metavar="MM",
                   help="'spec' (datasets.json value) or three numbers z y x in mm; default: nnU-Net v21 rule on the data")
    p.add_argument("--layout", choices=("btcv", "acdc", "msd", "nnunet_v1"), help="force a layout (paper datasets)")
    p.add_argument("--plan", dest="plan", action="append", default=[], metavar="KEY=VALUE",
                   help="your own dataset: impose a plan value instead of the planned one, e.g. "
                        "patch_size=16,128,128, batch_size=2, memory_gb=4, target_spacing=3,1,1, "
                        "normalization=ct,zscore, regions=WT:1,2,3;TC:2,3, batch_dice=true, num_folds=5 (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="rebuild an existing store from scratch (built beside it, then swapped in), e.g. after "
                        "the raw data changed; default: resume an interrupted prepare")
    p.add_argument("--allow-missing-labels", action="store_true",
                   help="paper datasets: prepare split cases whose label file is missing, unlabelled (recorded "
                        "in dataset.json); default: such a case is an error. Your own dataset lists its labelled "
                        "cases in its dataset.json")
    p.set_defaults(func=run)


def _target_spacing(ts: list[str] | None):
    if ts is None or ts == ["spec"]:
        return "spec" if ts else None
    from sam3dlib.data.planning import check_target_spacing

    return check_target_spacing(ts, "--target-spacing ('spec' or three numbers)", UserError)


def run(args: argparse.Namespace) -> int:
    ts = _target_spacing(args.target_spacing)
    if args.dataset is None:
        return _run_user(args, ts)
    if args.plan:
        raise UserError("--plan applies to your own datasets; the paper datasets have committed plans (the paper's "
                        "settings)")
    from sam3dlib.data.prepare import prepare_dataset

    out = args.out or f"data/{args.dataset}"
    store = prepare_dataset(args.dataset, args.raw, out, num_workers=args.workers, target_spacing=ts, layout=args.layout,
                            allow_missing_labels=args.allow_missing_labels, force=args.force)
    print(f"prepared {len(store.case_ids)} {args.dataset} cases in {store.root} "
          f"(target spacing {store.meta['target_spacing']}, layout {store.meta.get('source_layout')})")
    return 0


def _run_user(args: argparse.Namespace, ts) -> int:
    from sam3dlib.cli._errors import warnings_as_lines
    from sam3dlib.data.user_dataset import UnlistedImageWarning

    with warnings_as_lines("prepare", UnlistedImageWarning):
        return _prepare_user(args, ts)


def _prepare_user(args: argparse.Namespace, ts) -> int:
    from sam3dlib.data.planning import describe_plan, parse_plan_overrides
    from sam3dlib.data.user_dataset import load_user_dataset
    from sam3dlib.pipeline import prepare

    if args.layout is not None:
        raise UserError("--layout applies to the paper datasets; your own dataset's layout is told by its dataset.json")
    if args.allow_missing_labels:
        raise UserError("--allow-missing-labels applies to the paper datasets; every case of your own dataset "
                        "needs its label file (labelsTr/), or leave the case out of imagesTr/")
    if ts == "spec":
        raise UserError("--target-spacing spec: your own dataset has no shipped spec; give three numbers or leave it out")
    overrides = parse_plan_overrides(args.plan)
    if ts is not None:
        overrides["target_spacing"] = ts
    out = args.out or f"data/{re.sub(r'[^A-Za-z0-9_.-]+', '_', load_user_dataset(args.raw).name)}"
    store = prepare(args.raw, out, overrides, num_workers=args.workers, force=args.force)
    print(describe_plan(store.meta))
    print(f"prepared {len(store.case_ids)} cases in {store.root} (layout {store.meta.get('source_layout')}, "
          f"splits {store.meta.get('split_source')})")
    from sam3dlib.utils.shell import shell_command

    print("next: " + shell_command("sam3d", "train", "custom", "--data", store.root, "--out",
                                   f"runs/{store.root.name}", "--profile", "quick"))
    return 0
