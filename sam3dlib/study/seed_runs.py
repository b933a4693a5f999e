"""One experiment of a table for one seed: its config, reuse of a finished run, resume of an
interrupted one, and the conditions it was measured under (for the report's labels)."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sam3dlib.config import ExperimentConfig, upgrade_saved_values
from sam3dlib.modeling.constants import NO_ENCODER, RANDOM_INIT, RANDOM_WEIGHTS
from sam3dlib.modeling.models import SAM3D_MODEL
from sam3dlib.study.notebook_params import NotebookParams
from sam3dlib.study.registry import TableInfo, get_config
from sam3dlib.study.report import RunConditions
from sam3dlib.training.provenance import recorded_weights
from sam3dlib.utils import folder_lock


def experiment_config(name: str, p: NotebookParams, seed: int, model: str = SAM3D_MODEL) -> ExperimentConfig:
    """The config of experiment ``name`` under the notebook's parameters (device kept as given, ``cuda:N`` too)
    for ``model`` (a baseline takes no encoder settings: it has no encoder)."""
    overrides: dict[str, Any] = {"seed": seed, "protocol": p.protocol, "device": p.device}
    if model != SAM3D_MODEL:
        return get_config(name, profile=p.profile, **{**overrides, **p.overrides, "model": model})
    if p.encoder is not None:
        overrides["encoder"] = p.encoder
    if p.encoder_mode is not None:
        overrides["encoder_mode"] = p.encoder_mode
    if p.encoder_weights is not None:
        overrides["encoder_weights"] = p.encoder_weights
    overrides.update(p.inference_overrides())
    overrides.update(p.overrides)
    return get_config(name, profile=p.profile, **overrides)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _same_config(path: Path, cfg: ExperimentConfig) -> bool:
    try:
        return ExperimentConfig.load(path).to_dict() == cfg.to_dict()
    except (ValueError, TypeError, OSError):
        return False


def conditions_from_run(run_dir: Path, p: NotebookParams, dataset: str, phantom: bool, seeds: Sequence[int]) -> RunConditions:
    """The run's conditions from its ``provenance.json`` / ``config.json``, falling back to ``p``."""
    prov = _read_json(run_dir / "provenance.json")
    cfg = _read_json(run_dir / "config.json")
    cfg = cfg.get("config", cfg) if isinstance(cfg.get("config"), dict) else cfg
    encoder = str(prov.get("encoder") or cfg.get("encoder") or p.encoder or "vit_b")
    saved = upgrade_saved_values(cfg).get("encoder_weights")
    ckpt = recorded_weights(prov) or saved or p.encoder_weights
    sha = prov.get("encoder_sha256")
    if encoder == NO_ENCODER:  # a retrained baseline: no encoder, no weights file
        ck = NO_ENCODER
    elif prov.get("random_encoder") is True or ckpt in (None, "", RANDOM_INIT, RANDOM_WEIGHTS):
        ck = RANDOM_INIT
    else:
        ck = Path(str(ckpt)).name + (f" (sha256 {sha[:12]})" if isinstance(sha, str) and sha != RANDOM_INIT else "")
    return RunConditions(
        encoder=encoder,
        encoder_weights=ck,
        data="phantom" if bool(prov.get("phantom", phantom)) else dataset,
        profile=str(prov.get("profile") or cfg.get("profile") or p.profile),
        protocol=str(prov.get("protocol") or cfg.get("protocol") or p.protocol),
        seeds=tuple(int(s) for s in seeds),
    )


def finished_same(run_dir: Path, cfg: ExperimentConfig, store: Path) -> bool:
    """Whether ``run_dir`` holds a finished, scored run of exactly ``cfg`` on ``store``."""
    from sam3dlib.pipeline import is_scored

    if not is_scored(run_dir):
        return False
    prov = _read_json(run_dir / "provenance.json")
    return _same_config(run_dir / "config.json", cfg) and prov.get("data_dir") == os.fspath(store.resolve())


def run_seed(info: TableInfo, p: NotebookParams, data_dir: Path, seed: int, out: Path, progress: bool = False,
             model: str = SAM3D_MODEL) -> Path:
    """One experiment with ``model``: reuse a finished run of the same config and data, resume an interrupted one.

    Returns:
        The run folder ``out`` (with ``summary.csv`` and ``per_case.csv``).

    Raises:
        FolderInUseError: another live process holds ``out`` (nothing is changed in it).
        RuntimeError: the experiment finished without writing its result files (a bug).
    """
    from sam3dlib.pipeline import is_scored, run_experiment

    cfg = experiment_config(info.config, p, seed, model)
    store = data_dir / info.dataset
    if finished_same(out, cfg, store):
        print(f"{info.config} seed {seed}: reusing the finished run with the same config and data")
        return out
    # held from here to the scores: another job (or notebook) on this folder stops, naming this one
    with folder_lock.hold(out, "experiment run folder"):
        resume = (out / "checkpoints" / "latest.pt").is_file() and _same_config(out / "config.json", cfg)
        if not resume:
            _empty(out)  # an earlier run of another config in this notebook's output folder
        if progress:
            print(f"{info.config} seed {seed}: {'resuming' if resume else 'training'} ({cfg.epochs} epochs), "
                  "then prediction and scoring of the test cases", flush=True)
        run_dir = Path(run_experiment(cfg, store, out, resume=resume, progress=progress))
    if not is_scored(run_dir):
        raise RuntimeError(f"{run_dir}: run_experiment returned without a finished, scored run")
    return run_dir


def _empty(folder: Path) -> None:
    """Delete everything in ``folder`` but its lock file (which this process holds)."""
    for child in folder.iterdir():
        if child.name == folder_lock.LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


__all__ = ["conditions_from_run", "experiment_config", "finished_same", "run_seed"]
