"""The one marker of a finished run folder: ``finished.json``, written last and atomically.

Every job that fills a folder in several steps (a training run: checkpoints, logs, then the
last epoch; a ``sam3d reproduce`` table run: the executed notebook, CSVs, figures) calls
:func:`mark_finished` as its very last write, and every reader asks :func:`is_finished`
(the trainer, ``run_experiment``, ``sam3d reproduce``, ``sam3d predict``). Because the file
appears whole or not at all (:func:`sam3dlib.utils.fileio.atomic_write_json`), a folder
whose job was killed at any point is never taken for a finished one.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sam3dlib.utils.fileio import atomic_write_json

#: the marker's file name inside the finished folder
FINISHED = "finished.json"


def is_finished(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds the marker that its job completed (no error for a missing folder)."""
    return (Path(run_dir) / FINISHED).is_file()


def mark_finished(run_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``run_dir/finished.json`` with ``record`` (what was finished: epochs, seed, table ...).

    Call it after every other output of the job is written; the folder must exist.

    Raises:
        OutputError: the marker cannot be written (the folder is unchanged).
    """
    return atomic_write_json(Path(run_dir) / FINISHED, dict(record))
