"""sam3dlib: a re-runnable implementation of SAM3D (Bui et al., ISBI 2024)."""
from __future__ import annotations

from .build import build_sam3d
from .decoder import Decoder3D
from .losses import DeepSupervisionLoss, DiceCELoss, sam3d_loss
from .model import SAM3D, encode_slices
from .sam_checkpoint import CheckpointError, load_encoder_state, save_random_sam_checkpoint

__version__ = "0.1.0"

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
]
