"""Prediction with a trained run: NIfTI in, label NIfTI out (input's affine and shape).

The user's scan goes through the same preprocessing as training (crop to nonzero, resample
to the run's target spacing, normalise with the run's stored statistics), then sliding-window
inference with the run's patch size, 50% overlap, Gaussian weighting and (optionally)
mirroring TTA, then the softmax is mapped back to the original geometry (undo resampling
and cropping) and argmax'ed, as nnU-Net v1's export.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sam3dlib.config import ExperimentConfig
from sam3dlib.data.specs import get_spec
from sam3dlib.utils.host_memory import reuse_freed_host_memory
from sam3dlib.modeling.sam3d import SAM3D
from sam3dlib.modeling.sam_checkpoint import file_sha256
from sam3dlib.modeling.run_checkpoint import BEST, LATEST, load_checkpoint
from sam3dlib.utils.devices import resolve_device
from sam3dlib.modeling.factory import build_model

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


class RunError(FileNotFoundError):
    """A run directory that cannot be used for prediction; the message says why."""


@dataclass
class LoadedRun:
    """A trained model ready for prediction (unpacks as ``model, config, meta``)."""

    run_dir: Path
    model: SAM3D
    config: ExperimentConfig
    meta: dict
    device: torch.device
    checkpoint: str

    def __iter__(self) -> Iterator:
        return iter((self.model, self.config, self.meta))


def load_run(run_dir: str | os.PathLike, device: str = "auto", which: str = "best") -> LoadedRun:
    """Rebuild a run's model (encoder from its config, decoder from ``checkpoints/<which>.pt``).

    Args:
        run_dir: a folder written by :func:`sam3dlib.training.train`.
        device: ``auto``, ``cpu`` or ``cuda``.
        which: ``best`` (the paper's ``--valbest``) or ``latest``.

    Raises:
        RunError: missing files, or the encoder checkpoint changed since training.
    """
    run = Path(run_dir)
    for name in ("config.json", "dataset_meta.json", "provenance.json"):
        if not (run / name).is_file():
            raise RunError(f"{run / name} not found: {run} is not a finished sam3dlib training run")
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    ckpt = run / "checkpoints" / (BEST if which == "best" else LATEST)
    if not ckpt.is_file():
        raise RunError(f"{ckpt} not found: the run in {run} has not finished an epoch yet")
    config = ExperimentConfig.load(run / "config.json")
    meta = json.loads((run / "dataset_meta.json").read_text())
    prov = json.loads((run / "provenance.json").read_text())
    if config.sam_checkpoint is not None:
        if not Path(config.sam_checkpoint).is_file():
            raise RunError(f"the run's SAM checkpoint {config.sam_checkpoint} is missing; the frozen encoder "
                           "is rebuilt from it (only the decoder is saved)")
        sha = file_sha256(config.sam_checkpoint)
        if sha != prov.get("encoder_sha256"):
            raise RunError(f"{config.sam_checkpoint} has sha256 {sha[:12]}..., the run was trained with "
                           f"{str(prov.get('encoder_sha256'))[:12]}...: not the same encoder")
    dev = resolve_device(device if device != "auto" else "auto")
    reuse_freed_host_memory(dev.type)
    model = build_model(config, get_spec(config.dataset))
    from sam3dlib.modeling.fingerprint import encoder_fingerprint

    if prov.get("encoder_fingerprint") and encoder_fingerprint(model) != prov["encoder_fingerprint"]:
        raise RunError(f"the rebuilt {config.encoder} encoder differs from the one {run} was trained with")
    try:
        state = load_checkpoint(ckpt, map_location="cpu")
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    try:
        model.decoder.load_state_dict(state["decoder"])
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise RunError(f"{ckpt}: the decoder weights do not fit the run's config ({config.name}, "
                       f"{config.encoder}, skip={config.skip}): {' '.join(s.strip() for s in first[:3])}") from exc
    model.to(dev).eval()
    return LoadedRun(run, model, config, meta, dev, str(ckpt))


def _as_loaded(run: LoadedRun | str | os.PathLike, device: str = "auto") -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run, device)


def predict_probabilities(loaded: LoadedRun, image: np.ndarray, progress: bool = False,
                          sw_batch_size: int = 2) -> np.ndarray:
    """Softmax ``K x D x H x W`` of a preprocessed case ``C x D x H x W``.

    On a GPU out-of-memory error the windows are retried with half the ``sw_batch_size``
    (down to 1), then on the CPU, each time with a ``ResourceWarning``
    (:func:`sam3dlib.utils.oom.run_with_oom_fallback`).
    """
    from sam3dlib.inference.sliding_window import sliding_window_predict
    from sam3dlib.utils.oom import run_with_oom_fallback

    cfg = loaded.config
    arr = np.array(image, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] != loaded.model.in_channels:
        raise ValueError(f"image of shape {arr.shape}: expected {loaded.model.in_channels} x D x H x W "
                         f"({cfg.dataset} has {loaded.model.in_channels} modality channel(s))")

    def attempt(batch: int, device: torch.device) -> torch.Tensor:
        return sliding_window_predict(
            loaded.model, arr, (cfg.patch_size[0], *loaded.model.crop_hw), overlap=cfg.sw_overlap,
            mirror_axes=(0, 1, 2) if cfg.mirror_tta else None, sw_batch_size=batch, device=device,
            progress=progress,
        )

    start = loaded.device
    probs = run_with_oom_fallback(attempt, sw_batch_size if start.type != "cpu" else 1, start,
                                  what=f"prediction with {loaded.run_dir}", on_device_change=loaded.model.to)
    if next(loaded.model.parameters()).device != start:
        loaded.model.to(start)  # back where it was; the next case tries the GPU again
    return probs.numpy()


def predict_case(loaded: LoadedRun, image: np.ndarray, properties: dict, progress: bool = False) -> np.ndarray:
    """Label map of a preprocessed case on its original grid (NIfTI array order)."""
    from sam3dlib.data.preprocess import restore_label

    return restore_label(predict_probabilities(loaded, image, progress), properties)


def predict_file(run: LoadedRun | str | os.PathLike, in_path: str | os.PathLike | Sequence[str | os.PathLike],
                 out_path: str | os.PathLike, device: str = "auto", progress: bool = False) -> Path:
    """Segment one scan and write the label NIfTI with the input's affine and shape.

    Args:
        run: a run directory or a :func:`load_run` result.
        in_path: one NIfTI file (BraTS: 4D with the modalities last) or one file per modality.
        out_path: the label file to write (``.nii.gz``).
        device: where to run when ``run`` is a path.
    """
    from sam3dlib.data.preprocess import preprocess_case, save_label_nifti

    loaded = _as_loaded(run, device)
    paths = [Path(in_path)] if isinstance(in_path, (str, os.PathLike)) else [Path(p) for p in in_path]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"input image {p} does not exist")
    image, _, props = preprocess_case(paths if len(paths) > 1 else paths[0], loaded.meta)
    label = predict_case(loaded, image, props, progress)
    return save_label_nifti(label, props, out_path)


def _strip(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def group_inputs(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """``{case_id: [files]}`` of a folder: ``X_0000.nii.gz, X_0001.nii.gz`` form one multi-modal case."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    cases: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if not (p.is_file() and p.name.endswith(NIFTI_SUFFIXES)):
            continue
        stem = _strip(p.name)
        m = _CHANNEL.match(stem)
        cases.setdefault(m.group("case") if m else stem, []).append(p)
    if not cases:
        raise FileNotFoundError(f"no .nii.gz/.nii files in input folder {folder}")
    return cases


def predict_folder(run: LoadedRun | str | os.PathLike, in_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   device: str = "auto", progress: bool = True) -> list[Path]:
    """Segment every scan of ``in_dir`` into ``out_dir/<case>.nii.gz``."""
    loaded = _as_loaded(run, device)
    out = Path(out_dir)
    written = []
    for case_id, files in tqdm(group_inputs(in_dir).items(), desc="predict", disable=not progress):
        written.append(predict_file(loaded, files, out / f"{case_id}.nii.gz"))
    return written
