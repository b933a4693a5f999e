"""`sam3d train CONFIG --data DIR --out DIR`: train one paper experiment, or ``custom`` for your
own dataset (then score its test cases).

Examples::

    sam3d train custom --data data/heart --out runs/heart --profile quick --fold 0   # your own dataset

    sam3d train table1_synapse --data data/synapse --out runs/t1 --profile paper --set sam_checkpoint=checkpoints/sam_vit_b_01ec64.pth
    sam3d train table2_acdc --data data/acdc --out runs/t2 --profile quick --set patch_size=14,160,160
    sam3d train table1_synapse --data data/synapse --out runs/t1 --resume
    sam3d train table1_synapse --data data/synapse --out runs/t1 --force    # delete the run there, start over
    torchrun --nproc_per_node=4 -m sam3dlib train table1_synapse --data data/synapse --out runs/t1
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sam3dlib.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from sam3dlib.config import CONFIGS, CUSTOM, PROFILES

    p = sub.add_parser("train", help="train a paper experiment (decoder only; frozen SAM encoder)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", choices=[*CONFIGS, CUSTOM], metavar="CONFIG",
                   help=f"experiment: {', '.join(CONFIGS)}, or {CUSTOM} (your own dataset prepared with "
                        "`sam3d prepare --raw`; crop and batch size from its plan)")
    p.add_argument("--data", required=True, type=Path, help="prepared store (sam3d prepare output)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--profile", choices=PROFILES, default="paper",
                   help="budget: paper (1000x250, the paper's code), quick (~1 GPU hour), smoke (seconds, CPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set lr=0.005 --set patch_size=16,96,96 (repeatable)")
    p.add_argument("--fold", type=int, default=None,
                   help=f"{CUSTOM} only: the fold of the store's splits_final.json to train on (default 0); its "
                        "validation cases are the test cases")
    p.add_argument("--resume", action="store_true",
                   help="continue an unfinished run from <out>/checkpoints/latest.pt (a finished one is left as is)")
    p.add_argument("--force", action="store_true",
                   help="delete the run already in --out (finished or not) and train from scratch")
    p.add_argument("--allow-missing-cases", action="store_true",
                   help="train although the store lacks cases the shipped split lists (recorded in provenance.json)")
    p.add_argument("--no-evaluate", action="store_true", help="skip predicting and scoring the test cases")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.data.store import StoreError
    from sam3dlib.study.experiment import run_experiment
    from sam3dlib.training import RunExistsError, train

    try:
        config = _config(args)
    except (ValueError, StoreError) as exc:
        raise UserError(str(exc)) from None
    if args.resume and args.force:
        raise UserError("--resume and --force exclude each other: --resume continues the run in --out, "
                        "--force deletes it and starts over")
    progress = not args.no_progress
    kwargs = dict(resume=args.resume, progress=progress, force=args.force,
                  allow_missing_cases=args.allow_missing_cases)
    try:
        if args.no_evaluate:
            run_dir = train(config, args.data, args.out, **kwargs)
        else:
            run_dir = run_experiment(config, args.data, args.out, **kwargs)
    except (RunExistsError, StoreError) as exc:
        raise UserError(str(exc)) from None
    print(f"run written to {run_dir}")
    return 0


def _config(args: argparse.Namespace):
    """The experiment config: a paper table's, or ``custom`` from the store's plan."""
    from sam3dlib.config import CUSTOM, custom_config, get_config, parse_overrides
    from sam3dlib.data.store import PreparedDataset

    overrides = parse_overrides(args.overrides, args.config)
    if args.config != CUSTOM:
        if args.fold is not None:
            raise ValueError(f"--fold applies to {CUSTOM} (your own dataset); {args.config} uses the paper's split")
        return get_config(args.config, args.profile, **overrides)
    store = PreparedDataset(args.data)
    if not store.is_user_dataset:
        raise ValueError(f"{args.data} holds the paper dataset {store.spec.name!r}; train it with its table "
                         f"experiment (e.g. table1_synapse), or prepare your own data with `sam3d prepare --raw`")
    return custom_config(store.spec, args.profile, 0 if args.fold is None else args.fold, **overrides)
