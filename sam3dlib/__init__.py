"""sam3dlib: a re-runnable implementation of SAM3D (Bui et al., ISBI 2024)."""
from __future__ import annotations

from sam3dlib.modeling.build import build_sam3d
from sam3dlib.modeling.decoder import Decoder3D
from sam3dlib.modeling.encoders import load_encoder_state, save_random_sam_weights
from sam3dlib.modeling.losses import DeepSupervisionLoss, DiceCELoss, sam3d_loss
from sam3dlib.modeling.sam3d import SAM3D, encode_slices
from sam3dlib.modeling.weights_file import CheckpointError

__version__ = "0.1.0"

#: Names imported on first use (MONAI, pandas and the data layer are not needed to build a model).
_LAZY = {
    "get_spec": "data.specs",
    "get_split": "data.splits",
    "PreparedDataset": "data.store",
    "prepare_dataset": "data.prepare",
    "write_phantom": "data.phantoms",
    "dice": "evaluation.metrics",
    "hd95": "evaluation.metrics",
    "evaluate_case": "evaluation.metrics",
    "sliding_window_predict": "inference.sliding_window",
    "get_config": "study.registry",
    "MODELS": "modeling.models",
    "run_experiment": "pipeline",
    "predict_file": "inference.predictor",
    "load_run": "inference.predictor",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"sam3dlib.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sam3dlib' has no attribute {name!r}")


__all__ = [
    "SAM3D",
    "CheckpointError",
    "Decoder3D",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "build_sam3d",
    "encode_slices",
    "load_encoder_state",
    "sam3d_loss",
    "save_random_sam_weights",
    "__version__",
    *_LAZY,
]
