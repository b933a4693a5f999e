"""A run's ``provenance.json``: config, code version, packages, encoder checkpoint, device, data."""
from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from sam3dlib.modeling.constants import NO_ENCODER, RANDOM_INIT
from sam3dlib.modeling.fingerprint import encoder_fingerprint, state_digest  # noqa: F401 (re-used by the trainer)

PACKAGES = ("torch", "monai", "segment-anything", "numpy", "nibabel", "scipy", "sam3dlib")


def git_commit(path: Path | None = None) -> dict[str, Any]:
    """Commit hash of the repository holding sam3dlib (``unknown`` outside git) and a dirty flag."""
    where = path or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=20).stdout.strip())
        return {"git_commit": commit, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def recorded_weights(prov: dict[str, Any]) -> str | None:
    """The encoder weights a ``provenance.json`` records (runs written before the rename recorded
    them under ``encoder_checkpoint``)."""
    return prov.get("encoder_weights") or prov.get("encoder_checkpoint")


def encoder_fields(config, model) -> dict[str, Any]:
    """The frozen encoder a run used (name, weights file, sha256, fingerprint); ``none`` for a model
    without one (a retrained baseline)."""
    if model.encoder is None:
        return {"encoder": NO_ENCODER, "encoder_weights": NO_ENCODER, "encoder_sha256": NO_ENCODER,
                "random_encoder": False}
    return {
        "encoder": config.encoder,
        "encoder_weights": model.encoder_source or RANDOM_INIT,
        "encoder_input_hw": list(model.input_hw),
        "encoder_pool": model.embedding_pool,
        "decoder_grid": list(model.embedding_hw),
        "encoder_sha256": model.encoder_sha256 or RANDOM_INIT,
        "random_encoder": model.encoder_sha256 is None,
        "encoder_fingerprint": encoder_fingerprint(model),
    }


def collect(config, model, device: torch.device, store, split, world_size: int) -> dict[str, Any]:
    """The ``provenance.json`` of a run."""
    return {
        "config": config.to_dict(),
        **git_commit(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "model": config.model,
        "trainable_parameters": int(model.trainable_parameters()),
        **encoder_fields(config, model),
        "device": device_description(device),
        "world_size": world_size,
        "protocol": config.protocol,
        "profile": config.profile,
        "seed": config.seed,
        "data_dir": str(Path(store.root).resolve()),
        "dataset": store.spec.name,
        "phantom": bool(store.meta.get("phantom")),
        "data": store.data_label,
        "split": {"train": list(split.train), "val": list(split.val), "test": list(split.test)},
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
