"""`sam3d train CONFIG --data DIR --out DIR`: train one paper experiment, or ``custom`` for your
own dataset (then score its test cases).

Examples::

    sam3d train custom --data data/heart --out runs/heart --profile quick --fold 0   # your own dataset

    sam3d train table1_synapse --data data/synapse --out runs/t1 --profile paper --set encoder_weights=checkpoints/sam_vit_b_01ec64.pth
    sam3d train table2_acdc --data data/acdc --out runs/t2 --profile quick --set patch_size=14,160,160
    sam3d train table1_synapse --data data/synapse --out runs/t1-unetr --set model=unetr   # a retrained baseline
    sam3d train table1_synapse --data data/synapse --out runs/t1-nnunet --set model=nnunet --set time_budget_s=3600
    sam3d train table1_synapse --data data/synapse --out runs/t1 --resume
    sam3d train table1_synapse --data data/synapse --out runs/t1 --force    # delete the run there, start over
    torchrun --nproc_per_node=4 -m sam3dlib train table1_synapse --data data/synapse --out runs/t1
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sam3dlib.cli import UserError

#: Ctrl-C: what stopped and how to go on (``sam3d`` prints it as one line)
INTERRUPTED = ("train interrupted; checkpoints/latest.pt holds the last finished epoch: rerun with --resume to "
               "continue")


def register(sub: argparse._SubParsersAction) -> None:
    from sam3dlib.config import CUSTOM, PROFILES
    from sam3dlib.study.registry import EXPERIMENTS

    p = sub.add_parser("train", help="train a paper experiment or your own dataset (SAM3D: decoder only, frozen SAM encoder; "
                       "--set model=unetr|nnunet|swinunetr: a baseline, trained whole)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", choices=[*EXPERIMENTS, CUSTOM], metavar="CONFIG",
                   help=f"experiment: {', '.join(EXPERIMENTS)}, or {CUSTOM} (your own dataset prepared with "
                        "`sam3d prepare --raw`; crop and batch size from its plan)")
    p.add_argument("--data", required=True, type=Path, help="prepared store (sam3d prepare output)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="budget: paper (1000x250, the authors' code; the default), quick (~1 GPU hour), smoke "
                        "(seconds, CPU); with --resume the run's saved profile")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set lr=0.005 --set patch_size=16,96,96 --set model=nnunet "
                        "--set time_budget_s=600 (repeatable)")
    p.add_argument("--fold", type=int, default=None,
                   help="the fold of the store's splits_final.json to train on (stores planned with folds; default 0); its "
                        "validation cases are the test cases")
    p.add_argument("--resume", action="store_true",
                   help="continue an unfinished run from <out>/checkpoints/latest.pt with the run's own saved "
                        "config (<out>/config.json; only a changed value needs --set); a finished run is left as is")
    p.add_argument("--force", action="store_true",
                   help="delete the run already in --out (finished or not) and train from scratch")
    p.add_argument("--allow-missing-cases", action="store_true",
                   help="train although the store lacks cases the shipped split lists (recorded in provenance.json)")
    p.add_argument("--allow-missing-labels", action="store_true",
                   help="leave out train/val/test cases of the split whose label is missing (recorded in "
                        "provenance.json and results.json); default: such a case is an error")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue although the prepared data changed since the run started "
                        "(recorded in provenance.json); default: such a resumption is refused")
    p.add_argument("--no-evaluate", action="store_true", help="skip predicting and scoring the test cases")
    p.add_argument("--estimate", choices=("auto", "yes", "no"), default="auto",
                   help="print the expected wall time and peak memory from a few timed steps first (auto: "
                        "every profile but smoke)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def resume_config(args: argparse.Namespace):
    """The config to resume with: the run's saved ``config.json`` plus the ``--set`` values given.

    None when ``--out`` holds no saved config (nothing to resume: a fresh run from the flags)
    or when ``--profile`` names another profile than the saved one (a new config from the
    flags, which the trainer then compares with the saved one).

    Raises:
        UserError: the saved config is of another experiment than ``CONFIG``.
    """
    from sam3dlib.config import ExperimentConfig, parse_overrides

    saved_path = Path(args.out) / "config.json"
    if not saved_path.is_file():
        return None
    saved = ExperimentConfig.load(saved_path)
    if saved.name != args.config:
        raise UserError(f"--resume: {args.out} holds a {saved.name} run, not {args.config}")
    if args.profile is not None and args.profile != saved.profile:
        return None
    return saved.replace(**parse_overrides(args.overrides, args.config))


def run(args: argparse.Namespace) -> int:
    from sam3dlib.cli import announce_encoder_weights
    from sam3dlib.modeling.constants import RANDOM_WEIGHTS
    from sam3dlib.pipeline import run_experiment
    from sam3dlib.training import train

    config = resume_config(args) if args.resume else None
    if config is None:
        config = _config(args)
    if config.encoder_weights != RANDOM_WEIGHTS:
        announce_encoder_weights(config.encoder_weights)
    if args.estimate == "yes" or (args.estimate == "auto" and config.profile != "smoke"):
        print_estimate(config, args.data)
    if args.resume and args.force:
        raise UserError("--resume and --force exclude each other: --resume continues the run in --out, "
                        "--force deletes it and starts over")
    progress = not args.no_progress
    kwargs = dict(resume=args.resume, progress=progress, force=args.force,
                  allow_missing_cases=args.allow_missing_cases, allow_missing_labels=args.allow_missing_labels,
                  allow_data_change=args.allow_data_change)
    if args.no_evaluate:
        run_dir = train(config, args.data, args.out, **kwargs)
    else:
        run_dir = run_experiment(config, args.data, args.out, **kwargs)
    print(f"run written to {run_dir}")
    return 0


def print_estimate(config, data) -> None:
    """The run's expected wall time and peak memory (:func:`sam3dlib.training.estimate.estimate_training`)."""
    from sam3dlib.data.store import PreparedDataset
    from sam3dlib.training.estimate import estimate_training, training_slices

    store = PreparedDataset(data)
    est = estimate_training(config, store.spec, cache_slices=training_slices(store, config))
    print(f"{config.name} [{config.profile}]: {est.describe()}", flush=True)


def _config(args: argparse.Namespace):
    """The experiment config from the flags: a paper table's, or ``custom`` from the store's plan."""
    import dataclasses

    from sam3dlib.config import CUSTOM, parse_overrides
    from sam3dlib.pipeline import config_for
    from sam3dlib.study.registry import get_config

    profile = args.profile or "paper"
    overrides = parse_overrides(args.overrides, args.config)
    if args.config == CUSTOM:  # the experiment named on the command line, not a kind of dataset
        return config_for(args.data, profile, 0 if args.fold is None else args.fold, **overrides)
    config = get_config(args.config, profile, **overrides)
    # --fold: the store's plan decides whether it has folds (the trainer refuses a shipped split's)
    return config if args.fold is None else dataclasses.replace(config, fold=args.fold)
