"""The run folder's life cycle: what a run writes, when an existing run may be resumed,
overwritten (``force``) or must be left alone.

A run is finished when its marker exists (:func:`sam3dlib.utils.finished.is_finished`,
written by the trainer after the last epoch); an unfinished run has ``checkpoints/latest.pt``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from sam3dlib.config import ExperimentConfig
from sam3dlib.modeling.run_checkpoint import LATEST
from sam3dlib.utils.errors import UserInputError
from sam3dlib.utils.finished import FINISHED, is_finished

#: settings that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = ("device", "num_workers", "cache_dir", "mirror_tta", "sw_overlap", "encoder_chunk_size")

#: files and folders of a run that ``force=True`` deletes before starting over
RUN_OUTPUTS = ("checkpoints", "predictions", "config.json", "provenance.json", "dataset_meta.json", "log.csv",
               "training_curve.png", "per_case.csv", "summary.csv", "results.json", "ddp_replicas.json", FINISHED)


class RunExistsError(UserInputError, FileExistsError):
    """The output folder already holds a (different, unfinished or finished) training run."""


def clear_run(run: str | os.PathLike) -> list[Path]:
    """Delete the files of a training run in ``run`` (only :data:`RUN_OUTPUTS`; other files stay)."""
    removed = []
    for name in RUN_OUTPUTS:
        p = Path(run) / name
        if p.is_dir():
            shutil.rmtree(p)
            removed.append(p)
        elif p.exists():
            p.unlink()
            removed.append(p)
    return removed


def check_run_dir(run: Path, config: ExperimentConfig, resume: bool) -> bool:
    """Whether a checkpoint to resume from exists.

    Raises:
        RunExistsError: ``run`` holds a finished run and ``resume`` is False, an unfinished one
            and ``resume`` is False, or a run whose config differs from ``config`` in a setting
            outside :data:`RESUMABLE_CHANGES`.
    """
    latest = run / "checkpoints" / LATEST
    if is_finished(run) and not resume:
        raise RunExistsError(
            f"{run} already holds a finished training run ({run / FINISHED}); it is not overwritten: pass "
            "--force (force=True) to delete it and train again, or choose another --out "
            "(--resume only continues unfinished runs)"
        )
    if latest.is_file() and not resume:
        raise RunExistsError(
            f"{run} already holds an unfinished training run ({latest}); pass --resume (resume=True) to "
            "continue it, --force (force=True) to start over, or choose another --out"
        )
    if resume and (run / "config.json").is_file():
        old = ExperimentConfig.load(run / "config.json").to_dict()
        new = config.to_dict()
        diff = [k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k]]
        if diff:
            changes = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
            raise RunExistsError(f"cannot resume {run}: the config differs from the stored one ({changes})")
    return resume and latest.is_file()
