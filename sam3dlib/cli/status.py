"""`sam3d status RESULTS_DIR`: the jobs of `sam3d reproduce --launcher slurm` and their states."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status", help="show each job of a cluster reproduction: pending, running, done or failed",
        description="Lists the experiment x seed jobs of every table run under RESULTS_DIR (results/tableN, or one "
        "run folder) with their state, SLURM job id and log file, and the last line of each failed job's error.")
    p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="e.g. results/table1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.study.launcher import format_status
    from sam3dlib.study.reproduce import grid_status

    found = grid_status(args.results_dir)
    if not found:
        print(f"{args.results_dir}: no cluster jobs (run `sam3d reproduce N --launcher slurm --out {args.results_dir}`)")
        return 0
    for run_dir, rows in found:
        print(f"{run_dir}:")
        print(format_status(rows))
    return 0
