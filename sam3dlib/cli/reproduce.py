"""`sam3d reproduce N`: regenerate paper table N by executing its notebook (``make reproduce-tableN``)."""
from __future__ import annotations

import argparse
import sys

from sam3dlib.cli import device_type, renamed_option
from sam3dlib.config import PROFILES
from sam3dlib.study.inputs import DEFAULT_ENCODER_WEIGHTS, MissingInputError
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
    p.add_argument("--encoder-weights", default=str(DEFAULT_ENCODER_WEIGHTS),
                   help="SAM ViT-B weights file (default: %(default)s; not used by --profile smoke)")
    renamed_option(p, "--checkpoint", "--encoder-weights FILE")
    p.add_argument("--seeds", default="0", help='seeds, e.g. "0 1 2" (the table shows mean ± sd)')
    p.add_argument("--out", default=None, help="results folder (default: results/tableN)")
    p.add_argument("--device", default="auto", type=device_type, help=DEVICE_CHOICES)
    p.add_argument("--force", action="store_true", help="run again even if a finished run with the same inputs exists")
    p.add_argument("--log-output", action="store_true", help="stream the notebook's output while it runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.study.reproduce import reproduce_table

    out = args.out or f"results/table{args.table}"
    try:
        run_dir = reproduce_table(
            args.table, profile=args.profile, data_dir=args.data_dir, encoder_weights=args.encoder_weights,
            seeds=args.seeds, out=out, force=args.force, device=args.device, log_output=args.log_output,
        )
    except MissingInputError as exc:
        print(f"sam3d reproduce: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"sam3d reproduce: {exc}", file=sys.stderr)
        return 3
    print(f"Table {args.table}: results in {run_dir} (also {out}/latest)")
    for name in (f"table{args.table}.md",):
        path = run_dir / name
        if path.is_file():
            print(path.read_text())
    return 0
