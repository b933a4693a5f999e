"""`sam3d phantom`: not implemented yet (see the issue tracker)."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantom", help="(not implemented yet)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("sam3d phantom: not implemented yet in this version of sam3dlib", file=sys.stderr)
    return 1
