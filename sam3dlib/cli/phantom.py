"""``sam3d phantom DATASET --out PATH``: write a small synthetic dataset in the real raw layout."""
from __future__ import annotations

import argparse

from sam3dlib.data.specs import DATASETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantom", help="write a built-in synthetic dataset in its raw layout", description=__doc__)
    p.add_argument("dataset", choices=DATASETS + ("all",))
    p.add_argument("--out", required=True, help="output folder (for 'all': one sub-folder per dataset)")
    p.add_argument("--cases", type=int, default=None, help="number of cases (default per dataset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("small", "tiny"), default="small")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sam3dlib.data.phantoms import write_phantom
    from sam3dlib.utils.shell import shell_command

    names = DATASETS if args.dataset == "all" else (args.dataset,)
    for name in names:
        out = Path(args.out) / name if args.dataset == "all" else Path(args.out)
        root = write_phantom(name, out, n_cases=args.cases, seed=args.seed, size=args.size)
        print(f"wrote {name} phantom to {root}; next: "
              + shell_command("sam3d", "prepare", name, "--raw", root, "--out", f"data/{name}"))
    return 0
