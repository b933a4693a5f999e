"""The knobs every notebook's ``parameters`` cell has, checked and coerced with clear errors.

All notebooks share the same names, so ``papermill -p NAME VALUE`` and ``make
reproduce-tableN`` work the same everywhere::

    dataset, data_dir, encoder, encoder_weights, profile, encoder_mode, protocol,
    seed, seeds, device, out_dir, overrides, launcher, cluster, mirror, step_size,
    released_weights, released_predictions, models

A wrong type (``-p seed abc``) or an unknown value (``-p profile fast``) stops the notebook in its
first library call with a message naming the parameter, the value and what is allowed.

Examples::

    >>> p = NotebookParams.from_mapping(dict(dataset="synapse", seed="1", profile="smoke"))
    >>> p.seed, p.seeds
    (1, (1,))
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sam3dlib.config import ENCODER_MODES, PROFILES
from sam3dlib.data.specs import DATASETS
from sam3dlib.data.splits import PROTOCOLS
from sam3dlib.modeling.encoders import ENCODERS
from sam3dlib.modeling.models import MODELS, SAM3D_MODEL
from sam3dlib.study.paper_tables import TABLE_LAYOUTS
from sam3dlib.utils import values
from sam3dlib.utils.devices import parse_device
from sam3dlib.utils.errors import UserInputError

#: how a table's experiment x seed jobs run: one after another in this process, or as SLURM jobs
LAUNCHERS = ("local", "slurm")


class ParameterError(UserInputError, ValueError):
    """A notebook/papermill parameter has the wrong type or value."""


def _where(name: str) -> str:
    return f"notebook parameter {name!r}"


def as_int(name: str, value: Any) -> int:
    """An int (or a string of digits); bools and floats with a fraction are refused."""
    return values.as_int(value, _where(name), ParameterError)


def as_seeds(name: str, value: Any) -> tuple[int, ...] | None:
    """``None``, one int, a list of ints, or a string like ``"0 1 2"`` / ``"0,1,2"`` / ``"[0, 1]"``."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        text = str(value).strip()
        if text[:1] + text[-1:] in ("[]", "()"):  # papermill -p seeds "[0, 1]" passes the list as text
            text = text[1:-1]
        try:
            seeds = tuple(as_int(name, p) for p in text.replace(",", " ").split())
        except ParameterError:  # name the whole value, not the fragment that failed
            raise values.fail(_where(name), value, 'integers like "0 1 2", "0,1,2" or "[0, 1, 2]"',
                              ParameterError) from None
    elif isinstance(value, (list, tuple)):
        seeds = tuple(as_int(name, v) for v in value)
    else:
        raise values.fail(_where(name), value, 'a list of integers or a string like "0 1 2"', ParameterError)
    if not seeds:
        raise values.fail(_where(name), value, "at least one seed", ParameterError)
    if len(set(seeds)) != len(seeds):
        raise values.fail(_where(name), value, "distinct seeds", ParameterError)
    return seeds


def _choice(name: str, value: Any, choices: tuple[str, ...], allow_none: bool = False) -> str | None:
    return values.as_choice(value, choices, _where(name), ParameterError, allow_none)


def as_models(name: str, value: Any) -> tuple[str, ...]:
    """``None`` (SAM3D only), one name, a list, or a string like ``"sam3d unetr nnunet"``; each a
    key of :data:`sam3dlib.modeling.models.MODELS`, no repeats."""
    if value is None or value == "" or value == []:
        return (SAM3D_MODEL,)
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise values.fail(_where(name), value, 'a list of model names or a string like "sam3d unetr"', ParameterError)
    models = tuple(_choice(name, m, tuple(MODELS)) for m in items)
    if len(set(models)) != len(models):
        raise values.fail(_where(name), value, "distinct model names", ParameterError)
    return models


def _path(name: str, value: Any, allow_none: bool = True) -> Path | None:
    return values.as_path(value, _where(name), ParameterError, allow_none)


def as_encoder_weights(name: str, value: Any) -> str | None:
    """A weights file, ``"random"``, or None / ``""`` / ``"none"`` for the encoder's default weights."""
    if values.is_none_word(value):
        return None
    return values.as_str(value, _where(name), ParameterError)


def as_device(name: str, value: Any) -> str:
    """A device name (:func:`sam3dlib.utils.devices.parse_device`)."""
    try:
        return parse_device(value, _where(name))
    except ValueError as exc:
        raise ParameterError(str(exc)) from None


def as_step_size(name: str, value: Any) -> float | None:
    """None, or a fraction of the patch in (0, 1]."""
    if value is None or value == "":
        return None
    step = values.as_float(value, _where(name), ParameterError)
    if not 0.0 < step <= 1.0:
        raise values.fail(_where(name), value, "a fraction of the patch in (0, 1], e.g. 0.5", ParameterError)
    return step


@dataclass(frozen=True)
class NotebookParams:
    """Checked notebook parameters (defaults: the smoke profile on built-in phantoms).

    Attributes:
        dataset: ``synapse``, ``acdc``, ``lung``, ``brats`` (None: the notebook's own datasets).
        data_dir: folder holding prepared stores ``<data_dir>/<dataset>/``; None = build phantoms.
        encoder: a registry encoder (``vit_b``, ``litemedsam`` ...), or None for the profile's default (smoke: ``vit_tiny``).
        encoder_weights: the encoder's weights file (an official SAM ``.pth`` ...), ``"random"``, or
            None for the encoder's default weights (random ViT; LiteMedSAM's packaged file).
        profile: ``paper``, ``quick`` or ``smoke``.
        encoder_mode: ``cached`` (features computed once) or ``online``; None: profile default.
        protocol: ``paper`` (val = test, as the authors) or ``clean``.
        seed: the seed when ``seeds`` is not given.
        seeds: several seeds: tables show mean ± sd.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        out_dir: where results go.
        overrides: extra ``ExperimentConfig`` overrides (``{"epochs": 2}``).
        released_weights: the authors' released weights (file, trainer folder or zip) for the
            ladder's "authors' weights" column (:mod:`sam3dlib.study.ladder`); None: not run.
        released_predictions: the authors' released prediction maps (a folder) for its
            "authors' maps" column; None: not run.
        table_layout: ``reading`` (the paper's layout, our reading of Table 2's header marked) or
            ``printed`` (the printed header unchanged).
        launcher: ``local`` (every experiment x seed in this process) or ``slurm`` (one job each,
            :mod:`sam3dlib.study.launcher`; the table is made when all are done).
        cluster: the job settings of ``slurm`` (:class:`sam3dlib.study.launcher.ClusterSettings`
            fields: ``partition``, ``gpus_per_job``, ``cpus_per_job``, ``mem_gb``, ``time_min``, ``sbatch`` ...).
        mirror: test-time mirroring of the test-case prediction (nnU-Net's TTA; False = its
            ``--disable_tta``); None: the profile's (config ``mirror_tta``).
        step_size: step between sliding windows as a fraction of the patch, in (0, 1]
            (nnU-Net's; config ``sw_overlap = 1 - step_size``); None: the profile's (0.5).
        models: the models to train (:data:`sam3dlib.modeling.models.MODELS`): ``sam3d`` and/or the
            paper's baselines retrained under the same protocol (``unetr``, ``nnunet``, ``swinunetr``).
    """

    dataset: str | None = None
    data_dir: Path | None = None
    encoder: str | None = None
    encoder_weights: str | None = None
    profile: str = "smoke"
    encoder_mode: str | None = None
    protocol: str = "paper"
    seed: int = 0
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"
    out_dir: Path = Path("results")
    overrides: dict[str, Any] = field(default_factory=dict)
    released_weights: Path | None = None
    released_predictions: Path | None = None
    table_layout: str = "reading"
    launcher: str = "local"
    cluster: dict[str, Any] = field(default_factory=dict)
    mirror: bool | None = None
    step_size: float | None = None
    models: tuple[str, ...] = (SAM3D_MODEL,)

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> NotebookParams:
        """Check and coerce ``params`` (a notebook's parameter values); unknown names are refused.

        Raises:
            ParameterError: naming the parameter, its value and what is allowed.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ParameterError(f"unknown notebook parameter(s) {unknown}; known: {', '.join(sorted(known))}")
        p = dict(params)
        seed = as_int("seed", p.get("seed", 0))
        seeds = as_seeds("seeds", p.get("seeds")) or (seed,)
        overrides = p.get("overrides") or {}
        if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
            raise values.fail(_where("overrides"), overrides, "a dict of config field -> value", ParameterError)
        enc = p.get("encoder")
        if enc is not None:
            enc = _choice("encoder", enc, tuple(ENCODERS))
        out_dir = _path("out_dir", p.get("out_dir", "results"), allow_none=False)
        cluster = p.get("cluster") or {}
        if not isinstance(cluster, Mapping) or not all(isinstance(k, str) for k in cluster):
            raise values.fail(_where("cluster"), cluster, "a dict of job setting -> value", ParameterError)
        return cls(
            dataset=_choice("dataset", p.get("dataset"), DATASETS, allow_none=True),
            data_dir=_path("data_dir", p.get("data_dir")),
            encoder=enc,
            encoder_weights=as_encoder_weights("encoder_weights", p.get("encoder_weights")),
            profile=_choice("profile", p.get("profile", "smoke"), PROFILES),
            encoder_mode=_choice("encoder_mode", p.get("encoder_mode"), ENCODER_MODES, allow_none=True),
            protocol=_choice("protocol", p.get("protocol", "paper"), PROTOCOLS),
            seed=seed,
            seeds=seeds,
            device=as_device("device", p.get("device", "cpu")),
            out_dir=out_dir,  # type: ignore[arg-type]
            overrides=dict(overrides),
            released_weights=_path("released_weights", p.get("released_weights")),
            released_predictions=_path("released_predictions", p.get("released_predictions")),
            table_layout=_choice("table_layout", p.get("table_layout", "reading"), TABLE_LAYOUTS),
            launcher=_choice("launcher", p.get("launcher", "local"), LAUNCHERS),  # type: ignore[arg-type]
            cluster=dict(cluster),
            mirror=None if p.get("mirror") is None else values.as_bool(p["mirror"], _where("mirror"), ParameterError),
            step_size=as_step_size("step_size", p.get("step_size")),
            models=as_models("models", p.get("models")),
        )

    def inference_overrides(self) -> dict[str, Any]:
        """The config fields ``mirror`` and ``step_size`` set (``mirror_tta``, ``sw_overlap``); none when unset."""
        out: dict[str, Any] = {}
        if self.mirror is not None:
            out["mirror_tta"] = self.mirror
        if self.step_size is not None:
            out["sw_overlap"] = 1.0 - self.step_size
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("data_dir", "out_dir", "released_weights", "released_predictions"):
            d[k] = None if d[k] is None else os.fspath(d[k])
        d["seeds"] = list(self.seeds)
        d["models"] = list(self.models)
        return d


#: Parameters that were renamed: old name -> new name.
RENAMED_PARAMETERS = {"sam_checkpoint": "encoder_weights"}
#: The names every notebook's ``parameters`` cell defines.
PARAMETER_NAMES = tuple(f.name for f in fields(NotebookParams))


def check_params(**params: Any) -> NotebookParams:
    """``NotebookParams.from_mapping(params)``."""
    return NotebookParams.from_mapping(params)


def from_namespace(namespace: Mapping[str, Any]) -> NotebookParams:
    """Pick :data:`PARAMETER_NAMES` out of a notebook's globals and check them.

    Names missing from ``namespace`` take their defaults. Typical first call in a notebook:
    ``params = from_namespace(globals())``.

    Raises:
        ParameterError: also for a renamed parameter given with its old name (``sam_checkpoint``).
    """
    for old, new in RENAMED_PARAMETERS.items():
        if namespace.get(old) is not None:
            raise ParameterError(f"notebook parameter {old!r} was renamed: use {new}")
    return NotebookParams.from_mapping({k: namespace[k] for k in PARAMETER_NAMES if k in namespace})


__all__ = ["LAUNCHERS", "PARAMETER_NAMES", "NotebookParams", "ParameterError", "check_params", "from_namespace"]
