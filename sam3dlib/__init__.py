"""sam3dlib: a re-runnable implementation of SAM3D (Bui et al., ISBI 2024)."""
from __future__ import annotations

from .build import build_sam3d
from .decoder import Decoder3D
from .losses import DeepSupervisionLoss, DiceCELoss, sam3d_loss
from .model import SAM3D, encode_slices
from .sam_checkpoint import CheckpointError, load_encoder_state, save_random_sam_checkpoint

__version__ = "0.1.0"

#: Names imported on first use (MONAI, pandas and the data layer are not needed to build a model).
_LAZY = {
    "get_spec": "sam3dlib.data.specs",
    "get_split": "sam3dlib.data.splits",
    "PreparedDataset": "sam3dlib.data.store",
    "prepare_dataset": "sam3dlib.data.prepare",
    "write_phantom": "sam3dlib.phantoms",
    "dice": "sam3dlib.metrics",
    "hd95": "sam3dlib.metrics",
    "evaluate_case": "sam3dlib.metrics",
    "sliding_window_predict": "sam3dlib.inference",
    "get_config": "sam3dlib.config",
    "run_experiment": "sam3dlib.experiment",
    "predict_file": "sam3dlib.predict",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
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
    "save_random_sam_checkpoint",
    "__version__",
    *_LAZY,
]
