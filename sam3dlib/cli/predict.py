"""`sam3d predict --run RUN_DIR -i IN -o OUT`: segment scans with a trained run.

`--num-parts K --part-id I` predicts the I-th of K shares of a folder (sorted cases, every K-th
from the I-th), so K jobs, e.g. a SLURM array, cover it without overlap (nnU-Net's way).

IN is a NIfTI file (BraTS: one 4D file), one file per modality, or a folder. In a folder each
file is one case and gets one output named after it (``scan_0001.nii.gz`` ->
``OUT/scan_0001.nii.gz``); for a model with more than one channel ``X_0000.nii.gz``,
``X_0001.nii.gz``... form one multi-modal case ``X`` (a missing or extra channel is named), and
a run trained on an nnU-Net v2 store writes ``X.nii.gz`` for ``X_0000.nii.gz`` as nnU-Net
does (docs/DATA.md, "File names"). OUT is a file, or a folder for a folder IN; it must not be
an input (file or folder). The output has the input's shape and header (qform,
sform, their codes, pixdim, units), whatever the input's storage order.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sam3dlib.cli import UserError, device_type, renamed_option
from sam3dlib.utils.devices import DEVICE_CHOICES

#: Ctrl-C: what stopped and how to go on (``sam3d`` prints it as one line)
INTERRUPTED = ("predict interrupted; the outputs written so far are complete (none is half-written): rerun the "
               "same command to predict the rest (complete outputs are skipped unless --overwrite)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment NIfTI scans with a trained run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="run directory written by `sam3d train`")
    p.add_argument("-i", "--input", required=True, type=Path, nargs="+",
                   help="NIfTI file, one file per modality, or a folder")
    p.add_argument("-o", "--output", required=True, type=Path, help="label file (.nii.gz) or folder")
    p.add_argument("--which", choices=("best", "latest"), default="best",
                   help="the run's checkpoint: best (highest smoothed validation Dice) or latest (default: best)")
    renamed_option(p, "--checkpoint", "--which best|latest")
    p.add_argument("--device", type=device_type, default="auto", help=f"{DEVICE_CHOICES} (default: auto)")
    p.add_argument("--overwrite", action="store_true",
                   help="folder input: predict cases whose output already exists again (default: skip them, "
                        "so a rerun after an interruption finishes the rest)")
    p.add_argument("--num-parts", type=int, default=1, metavar="K",
                   help="split a folder input into K shares (sorted case ids, every K-th) for K parallel jobs (default 1)")
    p.add_argument("--part-id", type=int, default=0, metavar="I",
                   help="which share this job predicts, 0..K-1 (default 0); the K jobs cover the folder without overlap")
    p.add_argument("--no-mirror", action="store_true",
                   help="no test-time mirroring (nnU-Net's --disable_tta): one prediction per window instead of 8, "
                        "several times faster (default: the run's mirror_tta, on unless trained with it off)")
    p.add_argument("--step-size", type=float, default=None, metavar="F",
                   help="step between windows as a fraction of the patch, in (0, 1] (nnU-Net's --step_size; "
                        "default: the run's, 0.5 = 50%% overlap); larger is faster, see docs/PERFORMANCE.md")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam3dlib.cli import announce_encoder_weights
    from sam3dlib.cli._errors import warnings_as_lines
    from sam3dlib.data.io import is_nifti
    from sam3dlib.inference.predictor import (
        UnfinishedRunWarning,
        check_not_overwriting_inputs,
        check_part,
        load_run,
        predict_file,
        predict_folder,
    )
    from sam3dlib.inference.sliding_window import check_step_size
    from sam3dlib.utils.fileio import check_output_dir

    inputs = args.input
    folder_in = len(inputs) == 1 and inputs[0].is_dir()
    check_part(args.num_parts, args.part_id)
    if args.num_parts > 1 and not folder_in:
        raise UserError(f"--num-parts {args.num_parts} splits a folder input; {inputs[0]} is not a folder")
    if not folder_in:
        for p in inputs:
            if not p.is_file():
                raise UserError(f"input {p} does not exist")
        if not is_nifti(args.output):
            raise UserError(f"--output {args.output} must be a .nii.gz or .nii file for a file input")
    elif is_nifti(args.output):
        raise UserError(f"input {inputs[0]} is a folder, so --output must be a folder, not {args.output}")
    check_not_overwriting_inputs(inputs, args.output, output_is_folder=folder_in)  # before loading the model
    check_output_dir(args.output if folder_in else args.output.parent, "--output folder")
    if args.step_size is not None:
        check_step_size(args.step_size)  # before loading the model
    with warnings_as_lines("predict", UnfinishedRunWarning):  # e.g. an unfinished run: one line
        loaded = load_run(args.run, args.device, args.which)
    announce_encoder_weights(loaded.config.encoder_weights)
    loaded = loaded.with_options(mirror=False if args.no_mirror else None, step_size=args.step_size)
    if folder_in:
        written = predict_folder(loaded, inputs[0], args.output, progress=not args.no_progress,
                                 overwrite=args.overwrite, num_parts=args.num_parts, part_id=args.part_id)
        share = f" (part {args.part_id} of {args.num_parts})" if args.num_parts > 1 else ""
        print(f"wrote {len(written)} label map(s) to {args.output}{share}")
        return 0
    predict_file(loaded, inputs if len(inputs) > 1 else inputs[0], args.output, progress=not args.no_progress)
    print(f"wrote {args.output}")
    return 0
