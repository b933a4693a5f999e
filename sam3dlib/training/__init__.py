"""Training layer: the trainer, feature sources (online encoder, cached store), checkpoints,
distributed runs and provenance. Imports modeling, data, utils and config; never inference or study.

``train(config, data_dir, out_dir)`` writes a run directory.

Run directory::

    config.json  provenance.json  dataset_meta.json  log.csv  training_curve.png
    checkpoints/latest.pt  checkpoints/best.pt
"""
from __future__ import annotations

from sam3dlib.modeling.factory import build_model
from sam3dlib.training.optim import poly_lr
from sam3dlib.training.loop import RunExistsError, clear_run, is_finished, train

__all__ = ["RunExistsError", "build_model", "clear_run", "is_finished", "poly_lr", "train"]
