"""``sam3d prepare DATASET --raw PATH --out data/DATASET``: raw data -> prepared store (resumable)."""
from __future__ import annotations

import argparse

from sam3dlib.data.specs import DATASETS
from sam3dlib.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert raw data (BTCV, ACDC, MSD, nnU-Net v1 preprocessed) into a prepared store",
                       description=__doc__)
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--raw", required=True, help="raw data root (layout autodetected)")
    p.add_argument("--out", help="store folder (default data/DATASET)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default 0 = in-process)")
    p.add_argument("--target-spacing", nargs="+", metavar="MM",
                   help="'spec' (datasets.json value) or three numbers z y x in mm; default: nnU-Net v21 rule on the data")
    p.add_argument("--layout", choices=("btcv", "acdc", "msd", "nnunet_v1"), help="force a layout")
    p.add_argument("--allow-missing-labels", action="store_true",
                   help="prepare split cases whose label file is missing, unlabelled (recorded in dataset.json); "
                        "default: such a case is an error")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.data.prepare import prepare_dataset

    ts = args.target_spacing
    if ts is not None:
        if ts == ["spec"]:
            ts = "spec"
        else:
            try:
                ts = [float(x) for x in ts]
            except ValueError:
                raise UserError(f"--target-spacing: expected 'spec' or three numbers, got {' '.join(ts)}") from None
            if len(ts) != 3:
                raise UserError(f"--target-spacing: expected three numbers z y x, got {len(ts)}")
    out = args.out or f"data/{args.dataset}"
    store = prepare_dataset(args.dataset, args.raw, out, num_workers=args.workers, target_spacing=ts, layout=args.layout,
                           allow_missing_labels=args.allow_missing_labels)
    print(f"prepared {len(store.case_ids)} {args.dataset} cases in {store.root} "
          f"(target spacing {store.meta['target_spacing']}, layout {store.meta.get('source_layout')})")
    return 0
