"""`sam3d import-released DATASET --weights PATH --out RUN`: the authors' released weights as a run folder.

PATH is a ``model_best.model`` / ``model_final_checkpoint.model`` file, a bare state-dict ``.pth``,
their trainer folder (``.../fold_0/``) or a zip of either. The run folder then works with
``sam3d predict --run RUN`` like a trained run; its ``provenance.json`` names the file read
(model_best or model_final_checkpoint) and its sha256 (docs/REPRODUCE.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sam3dlib.study.inputs import DEFAULT_ENCODER_WEIGHTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-released", help="turn the SAM3D authors' released weights into a run folder",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=("synapse", "acdc", "lung", "brats"), metavar="DATASET",
                   help="synapse, acdc, lung or brats")
    p.add_argument("--weights", required=True, type=Path,
                   help="their .model file, a state-dict .pth, their trainer folder, or a zip of either")
    p.add_argument("--out", required=True, type=Path, help="run folder to write")
    p.add_argument("--data", type=Path, default=None,
                   help="the dataset's prepared store (default: data/DATASET): its preprocessing statistics")
    p.add_argument("--encoder-weights", type=Path, default=DEFAULT_ENCODER_WEIGHTS,
                   help=f"official SAM ViT-B file (default: {DEFAULT_ENCODER_WEIGHTS}; verified by md5 under that name)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config setting of the run (e.g. device=cpu)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.cli import UserError, announce_encoder_weights
    from sam3dlib.config import parse_overrides
    from sam3dlib.study.released_run import describe, experiment_of, import_released

    overrides = parse_overrides(args.overrides, experiment_of(args.dataset))
    enc = args.encoder_weights
    if "encoder_weights" in overrides:  # --set encoder_weights=... says the same as --encoder-weights
        given = overrides.pop("encoder_weights")
        enc = Path(given) if given is not None else None
    if overrides.get("encoder", "vit_b") == "vit_tiny":  # the tests' stand-in encoder has no weights file
        enc = None
    elif enc is None or not enc.is_file():
        raise UserError(f"--encoder-weights {enc} does not exist; sam3d download sam-vit-b --to {enc.parent}")
    else:
        announce_encoder_weights(enc)
    data = args.data or Path("data") / args.dataset
    out = import_released(args.dataset, args.weights, args.out, data, enc, force=args.force, **overrides)
    print(f"imported {describe(out)}")
    print(f"run written to {out}: sam3d predict --run {out} -i SCANS -o OUT")
    return 0
