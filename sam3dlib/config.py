"""The typed experiment configuration, its validation and the budget profiles.

This is a low layer (training and inference read a run's ``config.json`` through it); which
configuration reproduces which paper table lives in the experiment registry,
:mod:`sam3dlib.study.registry` (``get_config(name, profile, **overrides)``).

Profiles (:func:`profile_values`):

* ``paper``: the authors' code exactly (1000 epochs x 250 iterations, SGD lr 1e-2 momentum
  0.99 nesterov, poly 0.9, weight decay 3e-5, clip 12, the dataset's crop and batch size,
  deep supervision, online encoder, 50 validation batches per epoch).
* ``quick``: about an hour on one GPU: 50 epochs x 250 iterations with the encoder output
  cached on disk (``encoder_mode="cached"``), validation every 5 epochs, no other change.
* ``smoke``: seconds on a CPU for tests and notebook defaults: the random ``vit_tiny``
  stand-in encoder (not SAM), a (8, 48, 48) crop, 2 epochs x 4 iterations, cached mode,
  no mirroring TTA.
* ``demo``: ``make demo`` in minutes on 2 CPU cores (:data:`DEMO_PROFILE`): LiteMedSAM, cached
  features, 150 AdamW steps with the poly decay per step, no augmentation.

Every field can be overridden: ``get_config("table1_synapse", "quick", lr=5e-3)`` or, on
the command line, ``--set lr=5e-3 --set patch_size=16,96,96``. Values are checked by the
converters of :mod:`sam3dlib.utils.values` (the same rules as the notebooks' parameters);
errors are :class:`~sam3dlib.utils.errors.ConfigError` (a ``ValueError``) naming the setting.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from sam3dlib.data.specs import DatasetSpec
from sam3dlib.data.splits import PROTOCOLS
from sam3dlib.modeling.baselines import round_up
from sam3dlib.modeling.constants import RANDOM_WEIGHTS
from sam3dlib.modeling.encoders import check_crop_size
from sam3dlib.modeling.models import MODELS, SAM3D_MODEL, get_model_entry
from sam3dlib.utils.devices import parse_device
from sam3dlib.utils.errors import ConfigError
from sam3dlib.utils.fileio import read_json
from sam3dlib.utils.values import as_bool, as_choice, as_float, as_int, as_int_tuple, as_str, is_none_word

PROFILES = ("paper", "quick", "smoke", "demo")
EncoderMode = Literal["online", "cached"]
ENCODER_MODES: tuple[str, ...] = typing.get_args(EncoderMode)
#: Settings that name the experiment; ``get_config`` fixes them, overrides may not change them.
FIXED_FIELDS = ("name", "table", "dataset", "profile", "fold")


@dataclass
class ExperimentConfig:
    """Everything one training + evaluation run needs. Sizes are (D, H, W) = (z, y, x).

    Args:
        name: registry key (``table1_synapse`` ...).
        table: paper table the run reproduces (``"1"`` ... ``"5"``).
        dataset: ``synapse``, ``acdc``, ``lung`` or ``brats``.
        encoder: a registry encoder (``vit_b``, ``vit_l``, ``vit_h``, ``litemedsam``; ``vit_tiny`` is
            a random test stand-in, not SAM); :mod:`sam3dlib.modeling.encoders`.
        encoder_weights: the encoder's weights file (an official SAM ``.pth``, MedSAM's, a
            LiteMedSAM ``.pth``); None for the encoder's default weights (random ViT;
            LiteMedSAM's from its installed package); ``"random"`` for the same architecture
            randomly initialised (e.g. to see what LiteMedSAM's pretraining buys).
        encoder_scale: slices are resized by this factor before encoding; None: the
            encoder's default (crop size for the ViTs, as the paper; 256 for LiteMedSAM).
        encoder_pool: average-pool the frozen embeddings in-plane by this factor before the
            decoder (1: none, the paper); a coarser grid makes the decoder cheaper. None: the
            encoder's default (1 for every encoder, measured; :mod:`sam3dlib.modeling.encoders`).
        skip: residual branches in the decoder (False = Table 5 ablation).
        deep_supervision: 1/2 and 1/4 resolution heads in the loss.
        patch_size: training crop (D, H, W); H, W fit the encoder
            (:func:`sam3dlib.modeling.encoders.check_crop_size`; paper ViTs: multiples of 16).
        batch_size: patches per optimizer step (split across ranks under DDP).
        epochs, iterations_per_epoch: training budget.
        val_iterations: validation batches per online validation.
        lr, momentum, nesterov, weight_decay: SGD settings.
        poly_power: ``lr = lr0 * (1 - epoch/epochs) ** poly_power``.
        grad_clip: global L2 gradient-norm clip (nnU-Net: 12).
        encoder_mode: ``online`` (encode the augmented patch every step, the authors' code's way) or
            ``cached`` (encode every case once into a float16 feature store).
        encoder_dtype, decoder_dtype: ``float32`` or ``bfloat16`` autocast.
        protocol: ``paper`` (val = test, as the original code) or ``clean`` (held-out val);
            :data:`sam3dlib.data.splits.PROTOCOLS`.
        seed: seeds the model init, the patch stream and the augmentation.
        device: ``auto`` (cuda if available), ``cpu``, ``cuda`` or ``cuda:N``
            (:func:`sam3dlib.utils.devices.parse_device`).
        num_workers: DataLoader worker processes.
        val_every: validate every this many epochs (the last epoch always validates).
        batch_dice: Dice loss over the batch as one volume.
        squared_dice: the paper's printed squared-denominator Dice instead of the code's.
        cache_dir: feature-store folder (None: ``<data_dir>/feature_cache``).
        cache_stride: in-plane tile stride (H, W) of the feature store (None: half the crop).
        mirror_tta: 8-fold mirroring at test time.
        augment: augmentation of training patches (online: full nnU-Net moreDA; cached:
            z mirroring only).
        oversample_foreground: share of batch items forced onto foreground.
        ema_alpha: smoothing of the validation Dice for best-checkpoint selection.
        sw_overlap: sliding-window overlap at test time.
        encoder_chunk_size: slices per encoder call.
        optimizer: ``sgd`` (the paper's) or ``adamw`` (for few-minute CPU demos).
        poly_per_step: the poly learning-rate decay advances after every optimizer step
            (``lr * (1 - step / all steps) ** poly_power``) instead of after every epoch (nnU-Net's);
            for runs of a few epochs, where per-epoch steps would be coarse.
        fast_attention: the exact, faster attention path for the encoder (sam3dlib.modeling.fast_attention).
        fold: the fold of the store's ``splits_final.json`` (stores whose plan splits by folds;
            None for the paper's fixed splits).
        profile: the profile the values came from.
        model: the network to train, a key of :data:`sam3dlib.modeling.models.MODELS`: ``sam3d`` (the
            paper's) or a baseline retrained under the same protocol (``unetr``, ``nnunet``,
            ``swinunetr``). A baseline takes the volume directly: no frozen encoder, so
            ``encoder_mode`` is always ``online`` and the encoder settings are unused.
        time_budget_s: stop training once this many seconds of training (steps and validation,
            summed over resumed sessions) have passed, finishing cleanly (validation, checkpoint,
            finished marker); None: train all ``epochs``. The same budget gives models of
            different speeds equal wall-clock time.
    """

    name: str
    table: str
    dataset: str
    encoder: str = "vit_b"
    encoder_weights: str | None = None
    encoder_scale: float | None = None
    encoder_pool: int | None = None
    skip: bool = True
    deep_supervision: bool = True
    patch_size: tuple[int, int, int] = (64, 176, 176)
    batch_size: int = 2
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    lr: float = 1e-2
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5
    poly_power: float = 0.9
    grad_clip: float = 12.0
    encoder_mode: EncoderMode = "online"
    encoder_dtype: Literal["float32", "bfloat16"] = "float32"
    decoder_dtype: Literal["float32", "bfloat16"] = "float32"
    protocol: str = "paper"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    val_every: int = 1
    batch_dice: bool = False
    squared_dice: bool = False
    cache_dir: str | None = None
    cache_stride: tuple[int, int] | None = None
    mirror_tta: bool = True
    augment: bool = True
    oversample_foreground: float = 0.33
    ema_alpha: float = 0.9
    sw_overlap: float = 0.5
    encoder_chunk_size: int = 32
    fast_attention: bool = True
    optimizer: Literal["sgd", "adamw"] = "sgd"
    poly_per_step: bool = False
    fold: int | None = None
    profile: str = "paper"
    model: str = SAM3D_MODEL
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The settings and who wrote them (:data:`WRITER_KEYS`): a run's ``config.json``."""
        from sam3dlib.utils.version import package_version

        return json.dumps({**self.to_dict(), "sam3dlib_version": package_version(), "config_format": CONFIG_FORMAT},
                          indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Rebuild from :meth:`to_dict` output (lists become tuples; unknown keys are errors;
        :data:`WRITER_KEYS` are ignored; renamed settings are upgraded (:func:`upgrade_saved_values`);
        missing settings take today's defaults: for a file a run wrote, use :meth:`load`, which does not)."""
        values = upgrade_saved_values({k: v for k, v in values.items() if k not in WRITER_KEYS})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config settings {unknown}")
        return cls(**{k: _coerce(k, v, f"config value {k!r}") for k, v in values.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExperimentConfig:
        """The config saved in ``path`` (a run's ``config.json``).

        Raises:
            ConfigError: the file is unreadable, not a JSON object, has unknown settings, lacks a
                setting :data:`EARLIER_VALUES` cannot fill, or was written in a newer format (the
                message names the file and the writing and reading versions).

        Warns:
            InputNote: a setting the writing version did not have was filled with the value that
                reproduces that version's behaviour.
        """
        try:
            saved = upgrade_saved_values(read_json(path, ConfigError, expect=dict))
            return cls.from_dict(complete_saved_settings(saved, path))
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(text if text.startswith(str(path)) else f"{path}: {text}") from None

    def replace(self, **overrides: Any) -> ExperimentConfig:
        """A copy with ``overrides`` (checked like :func:`get_config`'s)."""
        return dataclasses.replace(self, **check_overrides(self.name, overrides))


# --------------------------------------------------------------------------- saved configs of other versions

#: the format of ``config.json`` this sam3dlib writes. 1: files without ``config_format`` (written
#: before it was recorded), 2: every setting plus :data:`WRITER_KEYS`, 3: the weights file in
#: ``encoder_weights`` (formats 1-2 held it in ``sam_checkpoint``; :func:`upgrade_saved_values`)
CONFIG_FORMAT = 3
#: keys of ``config.json`` that say who wrote it, besides the settings
WRITER_KEYS = ("sam3dlib_version", "config_format")
#: settings added after the first ``config.json``s were written: the value that reproduces what a
#: run did before the setting existed (``fast_attention``: the plain attention, same values;
#: ``optimizer``: SGD, the only one; ``fold``: the paper's fixed splits). A format-1 file lacking
#: one of these is read with this value; lacking any other setting it is refused, never read with
#: today's default
EARLIER_VALUES: dict[str, Any] = {"fast_attention": False, "optimizer": "sgd", "fold": None, "model": SAM3D_MODEL,
                                   "time_budget_s": None, "poly_per_step": False}


def complete_saved_settings(values: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a saved ``config.json``, with those its writer lacked filled from
    :data:`EARLIER_VALUES` (an :class:`~sam3dlib.utils.errors.InputNote` names them).

    Raises:
        ConfigError: a newer format than :data:`CONFIG_FORMAT`, or a missing setting without a
            known earlier value; the message names the file and both versions.
    """
    import warnings

    from sam3dlib.utils.errors import InputNote
    from sam3dlib.utils.version import package_version

    fmt = values.get("config_format", 1)
    writer = f"sam3dlib {values.get('sam3dlib_version', '(version not recorded)')} (config format {fmt})"
    reader = f"sam3dlib {package_version()} (config format {CONFIG_FORMAT})"
    if not isinstance(fmt, int) or fmt > CONFIG_FORMAT:
        raise ConfigError(f"{path}: written by {writer}, which {reader} cannot read; use the version that wrote it")
    fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    if set(values) - set(fields) - set(WRITER_KEYS):
        return values  # unknown settings: ExperimentConfig.from_dict names them
    missing = [k for k, f in fields.items() if k not in values and f.default is not dataclasses.MISSING]
    unknown = [k for k in missing if fmt >= CONFIG_FORMAT or k not in EARLIER_VALUES]
    if unknown:
        raise ConfigError(f"{path}: written by {writer} without the setting(s) {', '.join(unknown)}; {reader} does "
                          "not know which value(s) that version used and does not guess (add them to the file "
                          "with the values the run used)")
    if missing:
        warnings.warn(f"{path}: written by {writer} without {', '.join(missing)}; read with the value(s) that "
                      f"version used: {', '.join(f'{k}={EARLIER_VALUES[k]!r}' for k in missing)} ({reader})",
                      InputNote, stacklevel=3)
    return {**values, **{k: EARLIER_VALUES[k] for k in missing}}


# --------------------------------------------------------------------------- profiles

#: smoke crop (D, H, W): fits the phantoms; H, W fit the smoke encoder (multiples of 16).
SMOKE_PATCH = (8, 48, 48)
#: ``make demo``'s budget: LiteMedSAM, cached features, 150 AdamW steps (lr 2e-3, poly decay per
#: step) in 3 epochs of 50, validation (a monitor: the demo predicts with ``latest.pt``) after
#: each epoch, no augmentation (cached mode could only flip the slice order), a CPU. In so few
#: steps the paper's SGD (momentum 0.99) has not left the all-background solution (docs/NOTEBOOKS.md).
DEMO_PROFILE: dict[str, Any] = dict(
    encoder="litemedsam", encoder_mode="cached", batch_size=2, epochs=3, iterations_per_epoch=50, val_iterations=2,
    val_every=1, optimizer="adamw", lr=2e-3, poly_per_step=True, augment=False, num_workers=0, device="cpu",
    mirror_tta=False,
)
#: the experiment name of a user's dataset (its spec comes from the prepared store)
CUSTOM = "custom"


def profile_values(profile: str) -> dict[str, Any]:
    """The settings a budget profile sets on top of the dataset's (see the module docstring).

    Raises:
        ConfigError: an unknown profile.
    """
    if profile == "paper":
        return dict(epochs=1000, iterations_per_epoch=250, val_iterations=50, encoder_mode="online")
    if profile == "quick":
        return dict(epochs=50, iterations_per_epoch=250, val_iterations=50, encoder_mode="cached", val_every=5)
    if profile == "demo":
        return DEMO_PROFILE.copy()
    if profile == "smoke":
        return dict(
            encoder="vit_tiny", patch_size=SMOKE_PATCH, batch_size=2, epochs=2, iterations_per_epoch=4,
            val_iterations=2, encoder_mode="cached", num_workers=0, device="cpu", mirror_tta=False,
        )
    raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")


def dataset_values(spec: DatasetSpec, skip: bool = True) -> dict[str, Any]:
    """The settings an experiment takes from its dataset's plan: crop, batch size, batch Dice,
    and the decoder's skips."""
    return dict(patch_size=tuple(spec.patch_size), batch_size=spec.batch_size, batch_dice=spec.batch_dice, skip=skip)


def fit_crop(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the crop rounded up per axis to the model's multiple (UNETR 16, Swin UNETR 32)
    when the crop comes from the dataset or profile; a crop given in ``overrides`` is kept (and
    checked as given). E.g. the smoke crop (8, 48, 48) becomes (16, 48, 48) for ``unetr``."""
    multiple = get_model_entry(values.get("model", SAM3D_MODEL)).crop_multiple
    if multiple and "patch_size" not in overrides and "patch_size" in values:
        values = {**values, "patch_size": round_up(values["patch_size"], multiple)}
    return values


def store_config(spec: DatasetSpec, profile: str = "smoke", fold: int | None = 0,
                 **overrides: Any) -> ExperimentConfig:
    """The experiment ``custom`` on a prepared store: its plan's crop and batch size under ``profile``.

    Args:
        spec: the store's spec (``PreparedDataset(root).spec``, from its plan).
        profile: a key of :data:`PROFILES`.
        fold: the fold of the store's ``splits_final.json`` to train on (``None`` for a store
            whose plan names the shipped split).
        **overrides: any :class:`ExperimentConfig` field but the fixed ones.

    Raises:
        ConfigError: unknown profile/setting or a value of the wrong type.
    """
    checked = check_overrides(CUSTOM, overrides)
    values = fit_crop({**dataset_values(spec), **profile_values(profile), **checked}, checked)
    return ExperimentConfig(name=CUSTOM, table=CUSTOM, dataset=spec.name, profile=profile, fold=fold, **values)


def parse_overrides(items: list[str] | tuple[str, ...], name: str = "experiment") -> dict[str, Any]:
    """Parse ``["lr=0.01", "patch_size=16,96,96", "encoder_weights=none"]`` into typed values."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. lr=0.005)")
        key, raw = (s.strip() for s in item.split("=", 1))
        _check_name(name, key)
        out[key] = None if is_none_word(raw) and _optional(_fields()[key]) else raw
    return check_overrides(name, out)


# --------------------------------------------------------------------------- validation

def _fields() -> dict[str, Any]:
    hints = typing.get_type_hints(ExperimentConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ExperimentConfig)}


def did_you_mean(key: str, options) -> str:
    """``"; did you mean 'lr'?"`` for the closest of ``options``, or ``""``."""
    close = difflib.get_close_matches(key, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


#: Settings that were renamed: old name -> new name (a run folder's saved config is upgraded by
#: :func:`upgrade_saved_values`; an override with the old name stops with a hint).
RENAMED_FIELDS = {"sam_checkpoint": "encoder_weights"}


def upgrade_saved_values(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config dict in today's names (older run folders keep loading).

    Earlier configs held the weights file in ``sam_checkpoint`` and ``encoder_weights`` was
    ``"pretrained"`` (the file, or the encoder's default) or ``"random"``.
    """
    if "sam_checkpoint" not in values and values.get("encoder_weights") != "pretrained":
        return values
    out = {k: v for k, v in values.items() if k != "sam_checkpoint"}
    old = values.get("encoder_weights", "pretrained")
    out["encoder_weights"] = RANDOM_WEIGHTS if old == RANDOM_WEIGHTS else values.get("sam_checkpoint")
    return out


def _check_name(name: str, key: str) -> None:
    if key in RENAMED_FIELDS:
        raise ConfigError(f"setting {key!r} was renamed: use {RENAMED_FIELDS[key]}=...")
    if key not in _fields() or key in FIXED_FIELDS:
        fixed = " (fixed by the experiment; choose another experiment)" if key in FIXED_FIELDS else ""
        fixed = " (set by --fold)" if key == "fold" else fixed
        raise ConfigError(f"unknown setting {key!r} for {name}{fixed or did_you_mean(key, _fields())}")


def check_overrides(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Check override names (known, not fixed by the experiment) and convert their values.

    Raises:
        ConfigError: naming the setting and the experiment ``name``.
    """
    out = {}
    for key, value in overrides.items():
        _check_name(name, key)
        out[key] = _coerce(key, value, f"setting {key!r} for {name}")
    return out


def _optional(typ) -> bool:
    return type(None) in typing.get_args(typ)


def _base(typ):
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if typing.get_origin(typ) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return typ


#: Fields whose values are checked by a rule of their own (the one rule for each fact).
_FIELD_RULES = {
    "device": lambda value, where: parse_device(value, where),
    "protocol": lambda value, where: as_choice(value, PROTOCOLS, where),
    "model": lambda value, where: as_choice(value, tuple(MODELS), where),
}


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check/convert ``value`` to the field's declared type (strings from the CLI allowed)."""
    fields = _fields()
    if key not in fields:
        raise ConfigError(f"unknown {where}")
    typ = fields[key]
    if value is None:
        if _optional(typ):
            return None
        raise ConfigError(f"{where} cannot be None")
    base = _base(typ)
    if key in _FIELD_RULES:
        return _FIELD_RULES[key](value, where)
    if typing.get_origin(base) is Literal:
        return as_choice(value, typing.get_args(base), where)
    if typing.get_origin(base) is tuple:
        return as_int_tuple(value, len(typing.get_args(base)), where)
    converters = {bool: as_bool, int: as_int, float: as_float, str: as_str}
    return converters[base](value, where) if base in converters else value


def _check_model(cfg: ExperimentConfig) -> None:
    """The crop fits the model (SAM3D: its encoder; a baseline: its network); a baseline trains online."""
    entry = get_model_entry(cfg.model)
    try:
        if entry.frozen_encoder:
            check_crop_size(cfg.encoder, tuple(cfg.patch_size[1:]), cfg.encoder_scale, cfg.encoder_pool)
        else:
            entry.check_crop(tuple(cfg.patch_size))  # the spacing is the store's: the builder checks with it
    except ValueError as exc:
        raise ConfigError(f"{cfg.name}: patch_size {cfg.patch_size}: {exc}") from None
    if not entry.frozen_encoder:
        if cfg.encoder_weights is not None:
            raise ConfigError(f"{cfg.name}: model {cfg.model!r} has no encoder; it takes no encoder weights "
                              f"(got {cfg.encoder_weights!r})")
        cfg.encoder_mode = "online"  # the volume is the network's input: nothing to cache


def validate(cfg: ExperimentConfig) -> None:
    """Convert every field to its type and check value ranges.

    Raises:
        ConfigError: naming the setting (a ``ValueError``).
    """
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, _coerce(f.name, getattr(cfg, f.name), f"setting {f.name!r} of {cfg.name}"))
    if cfg.fold is not None and cfg.fold < 0:  # whether the store has folds is its plan's fact (load_data checks)
        raise ConfigError(f"{cfg.name}: fold must be a fold number >= 0, got {cfg.fold}")
    d, h, w = cfg.patch_size
    if d < 1:
        raise ConfigError(f"{cfg.name}: patch_size {cfg.patch_size} must have depth D >= 1")
    _check_model(cfg)
    if cfg.time_budget_s is not None and cfg.time_budget_s <= 0:
        raise ConfigError(f"{cfg.name}: time_budget_s must be > 0 seconds (or none), got {cfg.time_budget_s}")
    if cfg.encoder_weights == "pretrained":
        raise ConfigError(f"{cfg.name}: encoder_weights='pretrained' is no value: leave it unset (none) for the "
                          "encoder's default weights, or give a weights file")
    if cfg.cache_stride is not None and (min(cfg.cache_stride) < 1):
        raise ConfigError(f"{cfg.name}: cache_stride {cfg.cache_stride} must be positive")
    positive = ("batch_size", "epochs", "iterations_per_epoch", "val_iterations", "val_every", "encoder_chunk_size")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{cfg.name}: {key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.num_workers < 0:
        raise ConfigError(f"{cfg.name}: num_workers must be >= 0, got {cfg.num_workers}")
    if cfg.lr <= 0:
        raise ConfigError(f"{cfg.name}: lr must be > 0, got {cfg.lr}")
    if not 0.0 <= cfg.sw_overlap < 1.0:
        raise ConfigError(f"{cfg.name}: sw_overlap must be in [0, 1), got {cfg.sw_overlap}")
    if not 0.0 <= cfg.ema_alpha < 1.0:
        raise ConfigError(f"{cfg.name}: ema_alpha must be in [0, 1), got {cfg.ema_alpha}")
    if not 0.0 <= cfg.oversample_foreground <= 1.0:
        raise ConfigError(f"{cfg.name}: oversample_foreground must be in [0, 1], got {cfg.oversample_foreground}")


__all__ = ["CUSTOM", "ENCODER_MODES", "PROFILES", "ConfigError", "ExperimentConfig", "check_overrides", "dataset_values",
           "fit_crop", "parse_overrides", "profile_values", "store_config", "validate"]
