"""`sam3d train CONFIG --data DIR --out DIR`: train one paper experiment (then score its test cases).

Examples::

    sam3d train table1_synapse --data data/synapse --out runs/t1 --profile paper --set sam_checkpoint=checkpoints/sam_vit_b_01ec64.pth
    sam3d train table2_acdc --data data/acdc --out runs/t2 --profile quick --set patch_size=14,160,160
    sam3d train table1_synapse --data data/synapse --out runs/t1 --resume
    torchrun --nproc_per_node=4 -m sam3dlib train table1_synapse --data data/synapse --out runs/t1
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sam3dlib.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from sam3dlib.config import CONFIGS, PROFILES

    p = sub.add_parser("train", help="train a paper experiment (decoder only; frozen SAM encoder)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", choices=list(CONFIGS), metavar="CONFIG", help=f"experiment: {', '.join(CONFIGS)}")
    p.add_argument("--data", required=True, type=Path, help="prepared store (sam3d prepare output)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--profile", choices=PROFILES, default="paper",
                   help="budget: paper (1000x250, the paper's code), quick (~1 GPU hour), smoke (seconds, CPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set lr=0.005 --set patch_size=16,96,96 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/latest.pt")
    p.add_argument("--no-evaluate", action="store_true", help="skip predicting and scoring the test cases")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.config import get_config, parse_overrides
    from sam3dlib.data.store import StoreError
    from sam3dlib.experiment import run_experiment
    from sam3dlib.train import RunExistsError, train

    try:
        config = get_config(args.config, args.profile, **parse_overrides(args.overrides, args.config))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    progress = not args.no_progress
    try:
        if args.no_evaluate:
            run_dir = train(config, args.data, args.out, resume=args.resume, progress=progress)
        else:
            run_dir = run_experiment(config, args.data, args.out, resume=args.resume, progress=progress)
    except (RunExistsError, StoreError) as exc:
        raise UserError(str(exc)) from None
    print(f"run written to {run_dir}")
    return 0
