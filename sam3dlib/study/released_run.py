"""``sam3d import-released``: the authors' released decoder weights become an ordinary run folder.

The run folder has what :func:`sam3dlib.inference.predictor.load_run` reads from a trained run
(``config.json``, ``dataset_meta.json``, ``provenance.json``, ``checkpoints/best.pt``,
``finished.json``), so ``sam3d predict --run`` and the test-set evaluation use it as any other.
``best.pt`` holds ``model_best`` (the paper's ``--valbest``; the one file given otherwise),
``latest.pt`` holds ``model_final_checkpoint`` when the download has it. ``provenance.json``
``released`` names the file read, which one it is and its sha256. The encoder is rebuilt
from ``--encoder-weights`` (the official SAM ViT-B, verified by md5 under its official name),
as for every run: the authors' files hold only the decoder (docs/REPRODUCE.md).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sam3dlib.config import ExperimentConfig
from sam3dlib.data.specs import get_spec
from sam3dlib.data.store import PreparedDataset
from sam3dlib.modeling.factory import build_model
from sam3dlib.modeling.released import ReleasedWeights, check_plans, map_authors_state, read_released_weights
from sam3dlib.modeling.run_checkpoint import BEST, LATEST, save_checkpoint
from sam3dlib.study.registry import EXPERIMENTS, get_config
from sam3dlib.training import provenance
from sam3dlib.training.run_dir import RunExistsError, clear_run
from sam3dlib.utils.errors import ConfigError
from sam3dlib.utils.fileio import atomic_write_json
from sam3dlib.utils.finished import mark_finished

#: Datasets the authors released trained models for (their README); none for the skip ablation.
RELEASED_DATASETS = ("synapse", "acdc", "lung", "brats")
#: Which of :data:`RELEASED_DATASETS`'s weights the run folder's checkpoints hold.
CHECKPOINT_OF = {"model_best": BEST, "model_final_checkpoint": LATEST, "state_dict": BEST}


def experiment_of(dataset: str) -> str:
    """The registry experiment (with skips) whose table the authors' weights of ``dataset`` produced."""
    if dataset not in RELEASED_DATASETS:
        raise ConfigError(f"no released SAM3D weights for {dataset!r}; the authors released {', '.join(RELEASED_DATASETS)}")
    return next(name for name, e in EXPERIMENTS.items() if e.dataset == dataset and e.skip)


def released_config(dataset: str, encoder_weights: str | os.PathLike | None, profile: str = "paper",
                    **overrides: Any) -> ExperimentConfig:
    """The paper configuration of ``dataset`` with the encoder weights file (the authors' setting)."""
    values = dict(overrides)
    values["encoder_weights"] = os.fspath(encoder_weights) if encoder_weights is not None else None
    return get_config(experiment_of(dataset), profile, **values)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise RunExistsError(f"--out {out} is not empty; choose another folder or pass --force to replace it")
        clear_run(out)


def import_released(dataset: str, weights: str | os.PathLike, out: str | os.PathLike,
                    data_dir: str | os.PathLike, encoder_weights: str | os.PathLike | None,
                    profile: str = "paper", force: bool = False, **overrides: Any) -> Path:
    """Write a run folder ``out`` holding the authors' decoder weights for ``dataset``.

    Args:
        dataset: ``synapse``, ``acdc``, ``lung`` or ``brats``.
        weights: a ``.model`` file, a bare state-dict ``.pth``, a trainer folder, or a zip of either.
        out: the run folder to write.
        data_dir: the prepared store of ``dataset`` (its preprocessing statistics go into the run,
            as for a run trained on it).
        encoder_weights: the official SAM ViT-B file (verified when named as the official one);
            None only with a random test encoder (``encoder="vit_tiny"`` in ``overrides``).
        profile, overrides: the run's configuration (the paper profile by default).
        force: replace a non-empty ``out``.

    Returns:
        ``out``.

    Raises:
        ReleasedWeightsError: unreadable weights, or keys/shapes that do not fit (all named).
        RunExistsError: ``out`` is not empty and ``force`` is False.
        StoreError: ``data_dir`` is not a prepared store; ConfigError: its dataset differs.
    """
    out = Path(out)
    config = released_config(dataset, encoder_weights, profile, **overrides)
    store = PreparedDataset(data_dir)
    if store.spec.name != dataset:
        raise ConfigError(f"{data_dir}: a prepared {store.spec.name} store, not {dataset}")
    spec = get_spec(dataset)
    released = read_released_weights(weights)
    check_plans(released, spec.num_classes, spec.num_channels, dataset)
    model = build_model(config, spec)
    states = {released.which: map_authors_state(released.state, model.decoder, released.file)}
    for which, (file, _, state) in released.others.items():
        states[which] = map_authors_state(state, model.decoder, file)
    _check_out(out, force)
    write_run(out, config, model, store, released, states)
    return out


def write_run(out: Path, config: ExperimentConfig, model: torch.nn.Module, store: PreparedDataset,
              released: ReleasedWeights, states: dict[str, dict[str, torch.Tensor]]) -> Path:
    """The run folder's files; ``finished.json`` last."""
    out.mkdir(parents=True, exist_ok=True)
    record = released.record()
    atomic_write_json(out / "config.json", config.to_dict())
    atomic_write_json(out / "dataset_meta.json", store.meta)
    split = store.split(config.protocol, fold=config.fold)
    prov = provenance.collect(config, model, torch.device("cpu"), store, split, 1)
    prov["released"] = record
    atomic_write_json(out / "provenance.json", prov)
    written = {}
    for which, state in states.items():
        name = CHECKPOINT_OF[which]
        if name in written:  # a bare state dict only when no trainer file; never two for one name
            continue
        file, sha = (released.file, released.sha256) if which == released.which else released.others[which][:2]
        save_checkpoint(out / "checkpoints" / name, decoder=state, epoch=released.epoch, released_file=file,
                        released_which=which, released_sha256=sha, config=config.to_dict())
        written[name] = which
    mark_finished(out, {"imported": "released weights", "checkpoints": written, "released": record})
    return out


def describe(out: str | os.PathLike) -> str:
    """One line on what an imported run holds (for the CLI)."""
    from sam3dlib.utils.fileio import read_json

    rec = read_json(Path(out) / "provenance.json", ConfigError, expect=dict)["released"]
    epoch = f", epoch {rec['epoch']}" if rec.get("epoch") is not None else ""
    name = "/".join(Path(str(rec["file"]).split(":")[-1]).parts[-2:])
    return f"{rec['which']} (.../{name}{epoch}), sha256 {rec['sha256']}"


__all__ = ["RELEASED_DATASETS", "describe", "experiment_of", "import_released", "released_config", "write_run"]
