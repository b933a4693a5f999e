"""The run folder's life cycle: what a run writes, when an existing run may be resumed,
overwritten (``force``) or must be left alone.

A run is finished when its marker exists (:func:`sam3dlib.utils.finished.is_finished`,
written by the trainer after the last epoch); an unfinished run has ``checkpoints/latest.pt``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from sam3dlib.config import ExperimentConfig
from sam3dlib.modeling.run_checkpoint import LATEST
from sam3dlib.utils.errors import UserInputError
from sam3dlib.utils.finished import FINISHED, is_finished

#: settings that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = ("device", "num_workers", "cache_dir", "mirror_tta", "sw_overlap", "encoder_chunk_size",
                     "fast_attention")

#: files and folders of a run that ``force=True`` deletes before starting over
#: the data a run trained on: the store's ``dataset.json`` (``DATASET_META``, which prediction
#: uses) and a fingerprint of it and of every train/val case's properties (``DATA_FINGERPRINT``),
#: both written when the run starts and never rewritten by a resumption
DATASET_META = "dataset_meta.json"
DATA_FINGERPRINT = "data_fingerprint.json"

RUN_OUTPUTS = ("checkpoints", "predictions", "config.json", "provenance.json", DATASET_META, DATA_FINGERPRINT, "log.csv",
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


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(store, case_ids: list[str]) -> dict:
    """What a run trains on: the store, a hash of its ``dataset.json`` (spacing, normalisation,
    plan ...) and a hash of each of ``case_ids``' properties file (geometry, crop, source files).

    Returns:
        ``{"store": path, "dataset_meta_sha256": hex, "cases": {case_id: hex}}``.
    """
    from sam3dlib.data.store import case_paths

    cases = {c: hashlib.sha256(case_paths(store.root, c)["properties"].read_bytes()).hexdigest()
             for c in sorted(case_ids)}
    return {"store": str(store.root), "dataset_meta_sha256": _sha256_json(store.meta), "cases": cases}


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def data_changes(run: Path, store, case_ids: list[str]) -> list[str]:
    """How the data ``store`` offers now differs from what the run in ``run`` started on
    (``target_spacing: [3.0, 1.0, 1.0] -> [2.0, 1.0, 1.0]``, ``case img0001 changed`` ...);
    empty when the same, or when the run recorded nothing to compare with."""
    changes = []
    meta_path = run / DATASET_META
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            new = store.meta
            changes += [f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
    fp_path = run / DATA_FINGERPRINT
    if fp_path.is_file():
        try:
            old_cases = json.loads(fp_path.read_text()).get("cases", {})
        except (OSError, ValueError, AttributeError):
            old_cases = {}
        new_cases = data_fingerprint(store, case_ids)["cases"]
        changes += [f"case {c} added" for c in sorted(set(new_cases) - set(old_cases))]
        changes += [f"case {c} removed" for c in sorted(set(old_cases) - set(new_cases))]
        changes += [f"case {c} changed" for c in sorted(set(old_cases) & set(new_cases)) if old_cases[c] != new_cases[c]]
    return changes


def check_resume_data(run: Path, store, case_ids: list[str], allow_change: bool) -> list[str]:
    """Refuse to resume ``run`` on data other than it started on, unless ``allow_change``.

    Returns:
        The changes (empty when none; recorded in provenance when allowed).

    Raises:
        RunExistsError: one line saying what changed.
    """
    changes = data_changes(run, store, case_ids)
    if changes and not allow_change:
        listed = "; ".join(changes[:4]) + (f"; ... ({len(changes)} in all)" if len(changes) > 4 else "")
        raise RunExistsError(
            f"cannot resume {run}: the data in {store.root} changed since the run started ({listed}); earlier "
            "epochs used the recorded data. Pass --allow-data-change (allow_data_change=True) to continue on the "
            "changed data, --force to start over, or prepare the data as before")
    return changes
