"""Training: ``train(config, data_dir, out_dir)`` writes a run directory.

Run directory::

    config.json  provenance.json  dataset_meta.json  log.csv  training_curve.png
    checkpoints/latest.pt  checkpoints/best.pt
"""
from __future__ import annotations

from .factory import build_model, poly_lr
from .loop import RunExistsError, clear_run, is_finished, train

__all__ = ["RunExistsError", "build_model", "clear_run", "is_finished", "poly_lr", "train"]
