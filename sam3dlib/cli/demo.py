"""`sam3d demo`: the main job on built-in Synapse-like phantoms in a few minutes (``make demo``)."""
from __future__ import annotations

import argparse

from sam3dlib.study.inputs import DEFAULT_CHECKPOINT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train and evaluate SAM3D on built-in phantoms; write Table 1's layout with our row",
        description="Synapse-like phantoms, ViT-B encoder (random, or CHECKPOINT when it exists), cached "
        "encoder mode, a short CPU training, evaluation, and results/demo/table1.{csv,md} + figures.",
    )
    p.add_argument("--out", default="results/demo", help="output folder (default: results/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                   help="SAM ViT-B checkpoint, used when the file exists (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's number of epochs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.study.demo import run_demo

    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    result = run_demo(args.out, seed=args.seed, checkpoint=args.checkpoint, **overrides)
    print(result.table.to_markdown())
    print(result.message())
    print(f"written to {result.out_dir}: table1.csv, table1.md, table1.html, overlays.png, dsc_bars.png, per_case_dsc.png, demo.json")
    return 0
