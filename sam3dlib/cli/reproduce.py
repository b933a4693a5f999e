"""`sam3d reproduce N`: regenerate paper table N by executing its notebook (``make reproduce-tableN``)."""
from __future__ import annotations

import argparse
import sys

from sam3dlib.cli import device_type, renamed_option
from sam3dlib.config import PROFILES
from sam3dlib.modeling.models import MODELS
from sam3dlib.study.inputs import DEFAULT_ENCODER_WEIGHTS, MissingInputError
from sam3dlib.study.notebook_params import LAUNCHERS
from sam3dlib.utils.devices import DEVICE_CHOICES

#: Ctrl-C: what stopped and how to go on (``sam3d`` prints it as one line)
INTERRUPTED = ("reproduce interrupted; finished experiments are kept and the table is not written: rerun the same "
               "command to resume")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="regenerate a paper table (1-5) with papermill, side by side with the paper's numbers",
        description="Checks the data and the encoder weights first, then executes notebooks/0N_*.ipynb into "
        "OUT/runs/<run id>/ and points OUT/latest at it.",
    )
    p.add_argument("table", help="paper table: 1, 2, 3, 4 or 5")
    p.add_argument("--profile", default="paper", choices=PROFILES)
    p.add_argument("--data-dir", default="data", help="folder with prepared stores DATA_DIR/<dataset>/ (default: data)")
    p.add_argument("--phantoms", action="store_true",
                   help="use the built-in phantoms instead of --data-dir (a stand-in: tests the pipeline, not the paper)")
    p.add_argument("--encoder-weights", default=str(DEFAULT_ENCODER_WEIGHTS),
                   help="SAM ViT-B weights file (default: %(default)s; not used by --profile smoke)")
    renamed_option(p, "--checkpoint", "--encoder-weights FILE")
    p.add_argument("--seeds", default="0", help='seeds, e.g. "0 1 2" (the table shows mean ± sd)')
    p.add_argument("--models", default="sam3d",
                   help='models to train, e.g. "sam3d unetr nnunet" (the paper\'s baselines retrained under the same '
                        'protocol; choices: ' + ", ".join(MODELS) + ")")
    p.add_argument("--out", default=None, help="results folder (default: results/tableN)")
    p.add_argument("--device", default="auto", type=device_type, help=DEVICE_CHOICES)
    p.add_argument("--force", action="store_true", help="run again even if a finished run with the same inputs exists")
    p.add_argument("--released-weights", default=None,
                   help="the authors' released weights (.model, .pth, trainer folder or zip): the ladder's "
                        "'authors' weights, run by sam3dlib' column")
    p.add_argument("--released-predictions", default=None,
                   help="the authors' released prediction maps (folder; its dice_pre.txt is compared): the "
                        "ladder's 'authors' maps, scored by sam3dlib' column")
    p.add_argument("--estimate", choices=("auto", "yes", "no"), default="auto",
                   help="print each experiment's expected wall time and peak memory from a few timed steps first "
                        "(auto: every profile but smoke)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (default: the notebook's output streams: per experiment and seed epoch, loss, "
                        "ETA; then prediction and scoring)")
    p.add_argument("--kernel", default=None, metavar="NAME",
                   help="Jupyter kernel to run the notebook in (default: this Python, whatever kernel is named "
                        "python3); it must be able to import sam3dlib (checked before any work)")
    add_launcher_arguments(p)
    p.set_defaults(func=run)


def add_launcher_arguments(p: argparse.ArgumentParser) -> None:
    """``--launcher`` and the job settings (docs/CLUSTER.md)."""
    g = p.add_argument_group("launcher", "one job per experiment x seed on a SLURM cluster (docs/CLUSTER.md)")
    g.add_argument("--launcher", default="local", choices=LAUNCHERS,
                   help="local: every experiment x seed in this process (default); slurm: one submitit job each, "
                   "the table is rendered when all are done")
    g.add_argument("--cluster-config", default=None, metavar="FILE",
                   help="TOML file with the job settings (keys as the flags below, sbatch = {account = ...})")
    g.add_argument("--partition", default=None, help="SLURM partition")
    g.add_argument("--gpus-per-job", type=int, default=None, help="GPUs of one job (default 1)")
    g.add_argument("--cpus-per-job", type=int, default=None, help="CPU cores of one job (default 8)")
    g.add_argument("--mem-gb", type=float, default=None, help="host memory of one job in GB (default 32)")
    g.add_argument("--time-min", type=int, default=None,
                   help="time limit of one job in minutes (default 1440); a job that reaches it is requeued and resumes")
    g.add_argument("--sbatch", action="append", default=None, metavar="NAME=VALUE",
                   help="extra sbatch option, repeatable (e.g. --sbatch account=lab --sbatch qos=high)")
    g.add_argument("--no-wait", action="store_true",
                   help="slurm: submit and return; rerun the same command to wait and render the table")
    g.add_argument("--dry-run", action="store_true",
                   help="list the jobs with their state, expected GPU-hours and memory, and the sbatch lines; run nothing")
    g.add_argument("--tflops", type=float, default=None,
                   help="your GPU's sustained TFLOP/s for --dry-run's estimate (default: the stated model's 20)")


def cluster_overrides(args: argparse.Namespace) -> dict:
    """The job settings given as flags (None: not given)."""
    return {"partition": args.partition, "gpus_per_job": args.gpus_per_job, "cpus_per_job": args.cpus_per_job,
            "mem_gb": args.mem_gb, "time_min": args.time_min, "sbatch": args.sbatch}


def run(args: argparse.Namespace) -> int:
    from sam3dlib.cli import announce_encoder_weights
    from sam3dlib.study.reproduce import reproduce_table

    out = args.out or f"results/table{args.table}"
    if args.profile != "smoke":
        announce_encoder_weights(args.encoder_weights)
    local = args.launcher == "local" and not args.dry_run  # a SLURM grid's dry run states its own estimate
    if local and (args.estimate == "yes" or (args.estimate == "auto" and args.profile != "smoke")):
        from sam3dlib.study.reproduce import estimate_table

        try:
            for line in estimate_table(args.table, args.profile, None if args.phantoms else args.data_dir,
                                       args.encoder_weights, args.seeds, args.device):
                print(line, flush=True)
        except MissingInputError:
            pass  # reproduce_table names every missing input below
    try:
        run_dir = reproduce_table(
            args.table, profile=args.profile, data_dir=None if args.phantoms else args.data_dir,
            encoder_weights=args.encoder_weights, seeds=args.seeds, out=out, force=args.force, device=args.device,
            progress=not args.quiet,
            launcher=args.launcher, cluster=cluster_overrides(args), cluster_config=args.cluster_config,
            dry_run=args.dry_run, wait=not args.no_wait, tflops=args.tflops, kernel=args.kernel,
            released_weights=args.released_weights, released_predictions=args.released_predictions,
            models=args.models,
        )
    except MissingInputError as exc:
        print(f"sam3d reproduce: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"sam3d reproduce: {exc}", file=sys.stderr)
        return 3
    if args.dry_run or not (run_dir / f"table{args.table}.csv").is_file():
        return 0
    print(f"Table {args.table}: results in {run_dir} (also {out}/latest)")
    for path in [run_dir / f"table{args.table}.md", *sorted((run_dir / "ladder").glob("*/ladder.md"))]:
        if path.is_file():
            print(path.read_text())
    return 0
