"""``sam3d`` command line: one subcommand module per job, each exposing ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sam3dlib.utils.errors import UserInputError

#: what ``sam3d --help`` says (the module docstring is for developers)
DESCRIPTION = ("SAM3D: segment 3D medical volumes with a frozen Segment Anything encoder and a light 3D "
               "decoder. Prepare data (a paper dataset or your own MSD / nnU-Net v2 folder), train, predict "
               "NIfTI scans, evaluate, and reproduce the paper's tables. `sam3d COMMAND --help` for details.")
#: Subcommand modules under ``sam3dlib.cli``; each defines ``register(subparsers)``,
#: which adds its parser and sets ``func`` (returning an exit code).
COMMANDS = ("demo", "phantom", "prepare", "check_data", "train", "predict", "evaluate", "reproduce", "status",
            "import_released", "download")


class UserError(UserInputError):
    """A bad command-line argument: printed as one line, exit code 2."""


def device_type(value: str) -> str:
    """``type=`` of a ``--device`` option: :func:`sam3dlib.utils.devices.parse_device` with argparse's error."""
    from sam3dlib.utils.devices import parse_device

    try:
        return parse_device(value, "device")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def renamed_option(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept the old spelling ``old`` only to stop with one line naming the new one (exit code 2)."""

    class Renamed(argparse.Action):
        def __call__(self, p, namespace, values, option_string=None):  # noqa: ANN001 - argparse's signature
            print(f"{p.prog}: error: {old} was renamed: use {new}", file=sys.stderr)
            sys.exit(2)

    parser.add_argument(old, action=Renamed, nargs="?", help=argparse.SUPPRESS)


def announce_encoder_weights(path) -> None:
    """Print which official SAM checkpoint ``path`` is (md5-verified under an official name; a
    ``CheckpointError`` when that file is not the official one), or that it is not verified."""
    from pathlib import Path

    from sam3dlib.modeling.encoders.sam_vit import official_identity

    if path is None or not Path(path).is_file():
        return
    print(f"encoder weights: {official_identity(path) or f'{path} (not an official file name: not verified)'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam3d", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


#: what a command says when Ctrl-C stops it (a command module may set its own ``INTERRUPTED``)
INTERRUPTED = "interrupted; every file written so far is complete (none is half-written)"


def interrupted_message(args: argparse.Namespace) -> str:
    """The one line for Ctrl-C: the command module's ``INTERRUPTED`` (what stopped, how a rerun resumes)."""
    module = sys.modules.get(getattr(args.func, "__module__", ""), None)
    return getattr(module, "INTERRUPTED", INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> int:
    from sam3dlib.cli._errors import warnings_as_lines
    from sam3dlib.utils.errors import InputNote

    args = build_parser().parse_args(argv)
    try:
        with warnings_as_lines(args.command, InputNote):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"sam3d {args.command}: {interrupted_message(args)}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the project's error types become one line, bugs re-raise
        from sam3dlib.cli._errors import user_error_message

        message = user_error_message(exc)
        if message is None:
            raise
        print(f"sam3d {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
