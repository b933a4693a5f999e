"""`sam3d download ITEM [--to DIR] [--from FILE]`: fetch what the paper needs, verified.

ITEM: sam-vit-b, sam-vit-l, sam-vit-h (official SAM checkpoints, md5-checked; default --to
checkpoints), lung, brats (MSD Task06/Task01 through MONAI's tables, extracted; default --to raw).
synapse, acdc, authors-weights, authors-predictions, authors-data need a person (registration,
a browser): one line says where to get them and where to put them. Transfers resume after an
interruption; a file that does not verify is refused and deleted. --from FILE installs a file
fetched by hand after the same check.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from sam3dlib.study.downloads import ITEMS

    p = sub.add_parser("download", help="download the SAM checkpoints or MSD data, verified (resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("item", choices=ITEMS, metavar="ITEM", help=", ".join(ITEMS))
    p.add_argument("--to", type=Path, default=None, help="folder (default: checkpoints/ or raw/)")
    p.add_argument("--from", dest="from_file", type=Path, default=None,
                   help="a file you downloaded yourself: verified, then installed")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _progress(done: int, total: int | None) -> None:
    if total:
        print(f"\r{done / 2**20:.0f} / {total / 2**20:.0f} MiB", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.study.downloads import fetch

    path, what = fetch(args.item, args.to, args.from_file, None if args.no_progress else _progress)
    if not args.no_progress:
        print(file=sys.stderr)
    print(f"{path}: {what}")
    return 0
