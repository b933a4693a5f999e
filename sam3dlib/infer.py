"""Inference entry points in one place (``sam3dlib.infer``).

* array level, :mod:`sam3dlib.inference`: sliding-window prediction with Gaussian weighting
  and mirroring TTA over a preprocessed ``C x D x H x W`` volume;
* file level, :mod:`sam3dlib.predict`: a trained run + a NIfTI scan (or a folder of them) ->
  a label NIfTI with the input's affine and shape (``sam3d predict``).
"""
from __future__ import annotations

from .inference import gaussian_importance_map, predict_labels, sliding_window_predict
from .predict import LoadedRun, RunError, load_run, predict_case, predict_file, predict_folder

__all__ = [
    "LoadedRun",
    "RunError",
    "gaussian_importance_map",
    "load_run",
    "predict_case",
    "predict_file",
    "predict_folder",
    "predict_labels",
    "sliding_window_predict",
]
