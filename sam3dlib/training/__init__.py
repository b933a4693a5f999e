"""Training layer. Imports modeling, data, utils and config; never inference or study.

What each module owns:

* ``trainer``: :func:`train` and the :class:`Trainer` (setup, resume, epochs, validation,
  checkpoints, the finished marker), nnU-Net v1's schedule on SAM3D's decoder.
* ``step``: the one training step (:func:`~sam3dlib.training.step.decoder_update`, also timed
  by the benchmark), the loss of a config and the online validation Dice.
* ``feature_source``: online encoder or cached store, chosen once from ``encoder_mode``;
  what the cached source does to augmentation and sampling.
* ``feature_cache``: the on-disk float16 feature store of cached mode.
* ``data``: the epoch's patch streams (seeds, DDP shares, loaders) and cached-mode patches.
* ``run_dir``: the run folder's life cycle (resume, ``force``, refusing to overwrite).
* ``optim``: the optimizer and the poly learning rate. ``logging``: ``log.csv`` and the curve.
* ``provenance``: ``provenance.json``. ``distributed``: the ``torchrun`` process group.

``train(config, data_dir, out_dir)`` writes a run directory::

    config.json  provenance.json  dataset_meta.json  log.csv  training_curve.png
    checkpoints/latest.pt  checkpoints/best.pt  finished.json (after the last epoch)
"""
from __future__ import annotations

from sam3dlib.modeling.factory import build_model
from sam3dlib.training.optim import poly_lr
from sam3dlib.training.run_dir import RunExistsError, clear_run
from sam3dlib.training.trainer import Trainer, train
from sam3dlib.utils.finished import is_finished

__all__ = ["RunExistsError", "Trainer", "build_model", "clear_run", "is_finished", "poly_lr", "train"]
