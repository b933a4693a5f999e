"""Reading the SAM3D authors' released decoder weights and mapping them exactly onto :class:`Decoder3D`.

The authors' trainers (the nnFormer v1 lineage) save two files per training, in the trainer
output tree ``<results>/sam3d/3d_fullres/TaskNNN_X/<trainer>__<plans>/fold_0/``:

* ``model_best.model`` (the tables come from it: their evaluation runs ``-val --valbest``) and
  ``model_final_checkpoint.model``: ``torch.save`` of a dict ``{epoch, state_dict,
  optimizer_state_dict, lr_scheduler_state_dict, plot_stuff, best_stuff}`` (+ ``amp_grad_scaler``
  when mixed precision was on). ``plot_stuff``/``best_stuff`` hold numpy float64 scalars.
* ``<name>.model.pkl`` beside each: ``{init, name, class, plans}`` with numpy arrays inside.

Only the decoder is in ``state_dict`` (their network builds the frozen SAM encoder from the
official file inside every forward). Their names and ours (docs/REPRODUCE.md, "Trained model"):

==========================================  ==========================================
theirs                                      ours (:class:`Decoder3D`)
==========================================  ==========================================
``decoder5`` / ``4`` / ``3`` / ``2``        ``blocks.0`` / ``1`` / ``2`` / ``3``
``<block>.conv1.0.{weight,bias}``           ``<block>.body.0.*`` (3x3x3 conv)
``<block>.conv2.0.{weight,bias}``           ``<block>.body.3.*`` (3x3x3 conv)
``<block>.downsample.0.{weight,bias}``      ``<block>.residual.0.*`` (1x1x1 conv)
``out1`` (on ``decoder2``, full res.)       ``head``
``out2`` (on ``decoder3``)                  ``aux_heads.0``
``out3`` (on ``decoder4``)                  ``aux_heads.1``
``<head>.conv_pred.0.{weight,bias}``        ``<head>.layers.0.*`` (3x3x3 conv)
``<head>.segmentation_head.{weight,bias}``  ``<head>.layers.3.*`` (1x1x1 conv)
==========================================  ==========================================

Instance norms have no affine parameters on either side, so nothing else is stored. A
download may be one ``.model`` file, a bare state-dict ``.pth``, the trainer folder, or a zip
of either; everything is read with ``weights_only=True`` and the ``.pkl`` through the
restricted unpickler (:mod:`sam3dlib.data.safe_pickle`).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from sam3dlib.data.safe_pickle import UnsafePickleError, safe_load_pickle_bytes
from sam3dlib.modeling.weights_file import CheckpointError
from sam3dlib.utils.errors import MissingFileError

#: The trainer's checkpoint files, in the order they are preferred (the paper's tables: model_best).
TRAINER_FILES = ("model_best.model", "model_final_checkpoint.model")
#: Other extensions taken as one bare state dict (or a trainer dict) when no trainer file is there.
STATE_DICT_SUFFIXES = (".pth", ".pt", ".model")
#: The keys of a trainer checkpoint dict (``amp_grad_scaler`` only with mixed precision).
TRAINER_KEYS = ("epoch", "state_dict", "optimizer_state_dict", "lr_scheduler_state_dict", "plot_stuff", "best_stuff")

_BLOCKS = {"decoder5": "blocks.0", "decoder4": "blocks.1", "decoder3": "blocks.2", "decoder2": "blocks.3"}
_BLOCK_PARTS = {"conv1.0": "body.0", "conv2.0": "body.3", "downsample.0": "residual.0"}
_HEADS = {"out1": "head", "out2": "aux_heads.0", "out3": "aux_heads.1"}
_HEAD_PARTS = {"conv_pred.0": "layers.0", "segmentation_head": "layers.3"}


class ReleasedWeightsError(CheckpointError):
    """Released weights that cannot be read or do not fit the decoder; the message names the keys."""


def authors_key_map(deep_supervision: bool = True) -> dict[str, str]:
    """``{their state_dict key: our Decoder3D key}`` (the table in the module docstring).

    ``deep_supervision=False`` leaves out ``out2``/``out3`` (their network without ``do_ds``).
    """
    heads = _HEADS if deep_supervision else {"out1": _HEADS["out1"]}
    out = {}
    for theirs, ours in _BLOCKS.items():
        for part, our_part in _BLOCK_PARTS.items():
            for p in ("weight", "bias"):
                out[f"{theirs}.{part}.{p}"] = f"{ours}.{our_part}.{p}"
    for theirs, ours in heads.items():
        for part, our_part in _HEAD_PARTS.items():
            for p in ("weight", "bias"):
                out[f"{theirs}.{part}.{p}"] = f"{ours}.{our_part}.{p}"
    return out


def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    """Keys without DistributedDataParallel's ``module.`` prefix (the authors' loader drops it too)."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def map_authors_state(state: Mapping[str, torch.Tensor], decoder: torch.nn.Module,
                      where: str = "released weights") -> dict[str, torch.Tensor]:
    """Their decoder ``state_dict`` renamed onto ``decoder``'s keys, checked key by key and shape by shape.

    Args:
        state: the authors' ``state_dict`` (``decoder5.conv1.0.weight`` ...).
        decoder: our :class:`~sam3dlib.modeling.decoder.Decoder3D` built for the dataset (its
            ``state_dict`` gives the expected shapes; deep supervision on for the full map).
        where: the file, for messages.

    Raises:
        ReleasedWeightsError: any key missing, any extra key, any tensor of another shape; every
            offending key is named (theirs, and ours for shapes).
    """
    state = _strip_module(state)
    ours = decoder.state_dict()
    ds = any(k.startswith("aux_heads.") for k in ours)
    mapping = authors_key_map(ds)
    missing = [k for k in mapping if k not in state]
    extra = [k for k in state if k not in mapping]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {', '.join(missing)}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s): {', '.join(extra)}")
    shapes = [f"{k} {tuple(state[k].shape)} (ours {mapping[k]} {tuple(ours[mapping[k]].shape)})"
              for k in mapping if k in state and tuple(state[k].shape) != tuple(ours[mapping[k]].shape)]
    if shapes:
        problems.append(f"{len(shapes)} tensor(s) of another shape: {'; '.join(shapes)}")
    if problems:
        raise ReleasedWeightsError(f"{where}: does not fit the SAM3D decoder: " + "; ".join(problems))
    return {mapping[k]: state[k].detach().to(torch.float32).clone() for k in mapping}


def to_authors_state(decoder_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our decoder state renamed to the authors' keys (the inverse of :func:`map_authors_state`)."""
    ds = any(k.startswith("aux_heads.") for k in decoder_state)
    inverse = {v: k for k, v in authors_key_map(ds).items()}
    unknown = [k for k in decoder_state if k not in inverse]
    if unknown:
        raise ReleasedWeightsError(f"decoder keys without an authors' name (a decoder without skips?): {unknown}")
    return {inverse[k]: v for k, v in decoder_state.items()}


@dataclass
class ReleasedWeights:
    """Released weights read from a file, folder or zip (see :func:`read_released_weights`).

    Attributes:
        state: the authors' decoder ``state_dict`` (their key names), float tensors.
        source: the path the user gave.
        file: the file read (inside a folder or ``zip:member``).
        which: ``model_best``, ``model_final_checkpoint`` or ``state_dict`` (a bare ``.pth``).
        sha256: of the file read (for a zip member: of the member's bytes).
        epoch: the trainer's epoch counter, when stored.
        amp: whether the trainer dict has an ``amp_grad_scaler`` (trained with mixed precision).
        info: from ``<file>.pkl`` when present: trainer ``name``, ``num_classes`` (foreground),
            ``num_modalities``, the patch size of the plans' last stage.
        others: the other trainer files found beside it, ``{which: (file, sha256, state)}``.
    """

    state: dict[str, torch.Tensor]
    source: str
    file: str
    which: str
    sha256: str
    epoch: int | None = None
    amp: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    others: dict[str, tuple[str, str, dict[str, torch.Tensor]]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a run's provenance keeps about the file (no tensors)."""
        return {"source": self.source, "file": self.file, "which": self.which, "sha256": self.sha256,
                "epoch": self.epoch, "amp": self.amp, "pkl": self.info,
                "others": {w: {"file": f, "sha256": s} for w, (f, s, _) in self.others.items()}}


def _numpy_safe_globals() -> list:
    """What ``weights_only`` loading needs beyond tensors for the trainer dict: numpy float scalars
    (``plot_stuff``/``best_stuff`` hold ``np.float64`` means) and arrays, nothing that runs code."""
    import numpy.dtypes as nd

    core = getattr(np, "_core", None) or np.core
    names = [core.multiarray.scalar, core.multiarray._reconstruct, np.dtype, np.ndarray]
    names += [getattr(nd, n) for n in dir(nd) if n.endswith("DType") and isinstance(getattr(nd, n), type)]
    return names


def torch_load_weights_only(data: bytes, where: str) -> Any:
    """``torch.load(weights_only=True)`` of ``data``, numpy scalars and arrays allowed; one-line errors."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, a pickle that calls code, not a torch file ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReleasedWeightsError(f"{where}: cannot be read with weights_only=True ({type(exc).__name__}: "
                                   f"{first[:300]})") from exc


def _state_of(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], int | None, bool]:
    """The decoder state, epoch and AMP flag of a loaded trainer dict or bare state dict."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        absent = [k for k in TRAINER_KEYS if k not in obj]
        if absent:
            raise ReleasedWeightsError(f"{where}: a trainer checkpoint without {', '.join(absent)} "
                                       f"(keys: {', '.join(map(str, obj))})")
        state, epoch, amp = obj["state_dict"], obj.get("epoch"), "amp_grad_scaler" in obj
    else:
        state, epoch, amp = obj, None, False
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReleasedWeightsError(f"{where}: expected a decoder state dict of tensors, found {type(state).__name__}")
    return dict(state), (int(epoch) if isinstance(epoch, (int, np.integer)) else None), amp


def _plans_info(obj: Any, where: str) -> dict[str, Any]:
    """The trainer name and the plans' class and modality counts of a ``.model.pkl``."""
    if not isinstance(obj, Mapping):
        raise ReleasedWeightsError(f"{where}: expected a dict with init/name/class/plans, found {type(obj).__name__}")
    info: dict[str, Any] = {"name": str(obj.get("name"))}
    plans = obj.get("plans")
    if isinstance(plans, Mapping):
        for key in ("num_classes", "num_modalities"):
            if key in plans:
                info[key] = int(plans[key])
        stages = plans.get("plans_per_stage")
        if isinstance(stages, Mapping) and stages:
            last = stages[max(stages)]
            if isinstance(last, Mapping) and "patch_size" in last:
                info["patch_size"] = [int(v) for v in np.asarray(last["patch_size"]).ravel()]
    return info


class _Source:
    """Files of a plain file, a folder or a zip, read as bytes by name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() and zipfile.is_zipfile(path) else None
        if self.zip is not None and _is_torch_file(self.zip):
            self.zip = None  # torch.save's own format is a zip too
        if self.zip is not None:
            self.names = [n for n in self.zip.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        elif path.is_dir():
            self.names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        else:
            self.names = [path.name]

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(name)
        return (self.path / name).read_bytes() if self.path.is_dir() else self.path.read_bytes()

    def where(self, name: str) -> str:
        if self.zip is not None:
            return f"{self.path}:{name}"
        return os.fspath(self.path / name) if self.path.is_dir() else os.fspath(self.path)


def _is_torch_file(zf: zipfile.ZipFile) -> bool:
    """Whether a zip is one ``torch.save`` file (every member under one folder holding ``data.pkl``)."""
    names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    return len(tops) == 1 and f"{next(iter(tops))}/data.pkl" in names


def _fold_rank(name: str) -> tuple[int, str]:
    """Sort key: files under ``fold_0`` (the one the paper trains) first."""
    m = re.search(r"fold_(\d+)", name)
    return (int(m.group(1)) if m else 0, name)


def _choose(src: _Source) -> dict[str, str]:
    """``{which: name}`` of the trainer files (or the one state-dict file) in ``src``."""
    if src.zip is None and not src.path.is_dir():
        stem = src.path.name
        which = next((t.split(".")[0] for t in TRAINER_FILES if stem == t), "state_dict")
        return {which: src.names[0]}
    found: dict[str, str] = {}
    for t in TRAINER_FILES:
        hits = sorted((n for n in src.names if PurePosixPath(n).name == t), key=_fold_rank)
        folds = {re.search(r"fold_(\d+)", n).group(0) for n in hits if re.search(r"fold_(\d+)", n)}
        if len(folds) > 1 and not any("fold_0" in n for n in hits):
            raise ReleasedWeightsError(f"{src.path}: {t} of several folds ({', '.join(sorted(folds))}); "
                                       "point --weights at one fold's folder")
        if hits:
            found[t.split(".")[0]] = hits[0]
    if found:
        return found
    bare = [n for n in src.names if n.endswith(STATE_DICT_SUFFIXES)]
    if len(bare) == 1:
        return {"state_dict": bare[0]}
    listing = ", ".join(src.names[:8]) or "nothing"
    raise ReleasedWeightsError(f"{src.path}: no {' or '.join(TRAINER_FILES)} and not exactly one "
                               f"{'/'.join(STATE_DICT_SUFFIXES)} file (found: {listing})")


def read_released_weights(path: str | os.PathLike) -> ReleasedWeights:
    """Read the authors' weights from a ``.model`` file, a bare ``.pth``, a trainer folder or a zip.

    In a folder or zip, ``model_best.model`` is taken (the paper's ``--valbest``), else
    ``model_final_checkpoint.model``, else the one ``.pth``/``.pt``; under several folds,
    ``fold_0``. The ``.model.pkl`` beside the file is read when present.

    Raises:
        MissingFileError: ``path`` does not exist.
        ReleasedWeightsError: unreadable with ``weights_only=True``, not a trainer dict or state
            dict, an unsafe ``.pkl``, or no weights file in the folder/zip.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"released weights {path} do not exist")
    src = _Source(path)
    chosen = _choose(src)
    loaded: dict[str, tuple[str, str, dict[str, torch.Tensor], int | None, bool]] = {}
    for which, name in chosen.items():
        data = src.read(name)
        where = src.where(name)
        state, epoch, amp = _state_of(torch_load_weights_only(data, where), where)
        loaded[which] = (where, hashlib.sha256(data).hexdigest(), state, epoch, amp)
    main = next(iter(loaded))
    where, sha, state, epoch, amp = loaded[main]
    info: dict[str, Any] = {}
    pkl = chosen[main] + ".pkl"
    if pkl in src.names or (src.zip is None and not path.is_dir() and path.with_name(path.name + ".pkl").is_file()):
        pkl_where = src.where(pkl) if pkl in src.names else os.fspath(path.with_name(path.name + ".pkl"))
        raw = src.read(pkl) if pkl in src.names else Path(pkl_where).read_bytes()
        try:
            info = _plans_info(safe_load_pickle_bytes(raw), pkl_where)
        except (UnsafePickleError, pickle.UnpicklingError, EOFError) as exc:
            raise ReleasedWeightsError(f"{pkl_where}: {exc}") from exc
    others = {w: (f, s, st) for w, (f, s, st, _, _) in loaded.items() if w != main}
    return ReleasedWeights(state, os.fspath(path), where, main, sha, epoch, amp, info, others)


def save_authors_checkpoint(path: str | os.PathLike, decoder_state: Mapping[str, torch.Tensor], epoch: int,
                            num_classes: int, num_modalities: int, trainer: str = "sam3d_trainer") -> Path:
    """Write our decoder as the authors' trainer writes its checkpoints: the trainer dict (their key
    names, no optimizer) and ``<file>.pkl`` (trainer name, plans' class and modality counts).

    For stand-ins only (phantom ladders, tests): the real files come from the authors.
    """
    from sam3dlib.utils.fileio import atomic_torch_save, atomic_write

    path = Path(path)
    state = {k: v.detach().cpu() for k, v in to_authors_state(decoder_state).items()}
    atomic_torch_save(path, {"epoch": int(epoch), "state_dict": state, "optimizer_state_dict": None,
                             "lr_scheduler_state_dict": None, "plot_stuff": ([], [], [], []),
                             "best_stuff": (int(epoch), 0.0, 0.0)})
    info = {"init": (), "name": trainer, "class": f"<class '{trainer}'>",
            "plans": {"num_classes": num_classes - 1, "num_modalities": num_modalities}}
    atomic_write(path.with_name(path.name + ".pkl"), lambda fh: pickle.dump(info, fh))
    return path


def check_plans(weights: ReleasedWeights, num_classes: int, num_channels: int, dataset: str) -> None:
    """Refuse weights whose ``.pkl`` plans name another class or modality count than ``dataset``.

    ``num_classes`` counts the background (the plans' ``num_classes`` does not).
    """
    info = weights.info
    if "num_classes" in info and info["num_classes"] + 1 != num_classes:
        raise ReleasedWeightsError(f"{weights.file}.pkl: plans of {info['num_classes'] + 1} classes (background "
                                   f"included), {dataset} has {num_classes}")
    if "num_modalities" in info and info["num_modalities"] != num_channels:
        raise ReleasedWeightsError(f"{weights.file}.pkl: plans of {info['num_modalities']} modalities, {dataset} "
                                   f"has {num_channels}")


__all__ = ["save_authors_checkpoint", "STATE_DICT_SUFFIXES", "TRAINER_FILES", "TRAINER_KEYS", "ReleasedWeights", "ReleasedWeightsError",
           "authors_key_map", "check_plans", "map_authors_state", "read_released_weights", "to_authors_state",
           "torch_load_weights_only"]
