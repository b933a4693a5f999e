"""Run folders of ``sam3d reproduce``: ``<out>/runs/<run id>/`` and the ``latest`` pointer.

The run id is ``<profile>-seeds<..>-<hash of the inputs>``. A finished run (``finished.json``) with
the same inputs is never overwritten: without ``force`` a new reproduction is refused; with
``force`` it runs under the next free id (``...-2``). ``latest`` (a symlink, plus a ``LATEST``
text file for filesystems without symlinks) names the newest run.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from sam3dlib.modeling.models import SAM3D_MODEL
from sam3dlib.utils.errors import UserInputError
from sam3dlib.utils.fileio import atomic_write_text
from sam3dlib.utils.finished import is_finished

LATEST = "latest"


class FinishedRunError(UserInputError, FileExistsError):
    """A finished run with the same inputs exists and ``force`` was not given."""


def run_id(table: str, profile: str, data_dir: Path | None, encoder_weights: Path | None, seeds: Sequence[int], device: str,
           models: Sequence[str] = (SAM3D_MODEL,), **released: Path | None) -> str:
    """``<profile>-seeds<a_b>-<8 hex digits>``: a hash of every input (the weights file's size and mtime too;
    the models when other than SAM3D alone; the released weights / predictions when given)."""
    h = hashlib.sha256()
    for part in (table, profile, os.fspath(data_dir.resolve()) if data_dir else "phantom",
                 os.fspath(encoder_weights.resolve()) if encoder_weights else "none", " ".join(map(str, seeds)), device):
        h.update(part.encode() + b"\0")
    if tuple(models) != (SAM3D_MODEL,):
        h.update(("models:" + " ".join(models)).encode() + b"\0")
    for key, path in sorted(released.items()):
        if path is not None:
            h.update(f"{key}={os.fspath(Path(path).resolve())}".encode() + b"\0")
    if encoder_weights is not None and encoder_weights.is_file():
        st = encoder_weights.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{profile}-seeds{'_'.join(map(str, seeds))}-{h.hexdigest()[:8]}"


def select_run_dir(out: Path, base: str, force: bool = False) -> Path:
    """``out/runs/<base>``, unless a finished run holds it.

    A finished run (its :func:`~sam3dlib.utils.finished.is_finished` marker) with the same id is never overwritten: without ``force`` this
    raises; with ``force`` the next free id (``<base>-2``, ``<base>-3`` ...) is used. An
    unfinished run with the same id (interrupted) is redone in place.

    Raises:
        FinishedRunError: a finished run with these inputs exists and ``force`` is False
            (a ``FileExistsError``).
    """
    runs = Path(out) / "runs"
    run_dir, k = runs / base, 1
    while run_dir.exists():
        finished = is_finished(run_dir)
        if finished and not force:
            raise FinishedRunError(
                f"{run_dir} already holds a finished run with these inputs (see {Path(out) / LATEST}); "
                "to run again under a new id: make ... FORCE=1 (sam3d reproduce --force)"
            )
        if not finished and not force:
            break
        k += 1
        run_dir = runs / f"{base}-{k}"
    return run_dir


def point_latest(out: Path, run_dir: Path) -> None:
    """Make ``out/latest`` (symlink) and ``out/LATEST`` (text) name ``run_dir``."""
    rel = os.path.relpath(run_dir, out)
    atomic_write_text(out / "LATEST", rel + "\n")
    tmp = out / f".{LATEST}.tmp{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(rel, tmp, target_is_directory=True)
        os.replace(tmp, out / LATEST)
    except OSError:  # no symlinks on this filesystem: LATEST (text) is the pointer
        pass


__all__ = ["LATEST", "FinishedRunError", "point_latest", "run_id", "select_run_dir"]
