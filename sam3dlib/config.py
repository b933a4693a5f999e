"""One typed experiment configuration per paper table, with three budget profiles.

Profiles:

* ``paper``: the paper's code exactly (1000 epochs x 250 iterations, SGD lr 1e-2 momentum
  0.99 nesterov, poly 0.9, weight decay 3e-5, clip 12, the dataset's crop and batch size,
  deep supervision, online encoder, 50 validation batches per epoch).
* ``quick``: about an hour on one GPU: 50 epochs x 250 iterations with the encoder output
  cached on disk (``encoder_mode="cached"``), validation every 5 epochs, no other change.
* ``smoke``: seconds on a CPU for tests and notebook defaults: the random ``vit_tiny``
  stand-in encoder (not SAM), a (8, 48, 48) crop, 2 epochs x 4 iterations, cached mode,
  no mirroring TTA.

Every field can be overridden: ``get_config("table1_synapse", "quick", lr=5e-3)`` or, on
the command line, ``--set lr=5e-3 --set patch_size=16,96,96``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sam3dlib.data.specs import get_spec
from sam3dlib.modeling.encoders import check_crop_size

PROFILES = ("paper", "quick", "smoke")
ENCODER_MODES = ("online", "cached")
PROTOCOLS = ("paper", "clean")

#: Dice over the whole batch when the nnU-Net v1 plans have two stages (Synapse, Lung);
#: per sample otherwise (evaluation.md section 5; datasets.json ``plans_stages_note``).
BATCH_DICE = {"synapse": True, "lung": True, "acdc": False, "brats": False}


@dataclass
class ExperimentConfig:
    """Everything one training + evaluation run needs. Sizes are (D, H, W) = (z, y, x).

    Args:
        name: registry key (``table1_synapse`` ...).
        table: paper table the run reproduces (``"1"`` ... ``"5"``).
        dataset: ``synapse``, ``acdc``, ``lung`` or ``brats``.
        encoder: a registry encoder (``vit_b``, ``vit_l``, ``vit_h``, ``litemedsam``; ``vit_tiny`` is
            a random test stand-in, not SAM); :mod:`sam3dlib.modeling.encoders`.
        sam_checkpoint: encoder weights file (official SAM ``.pth`` ...), or None for the
            encoder's default weights (random ViT; LiteMedSAM's from its installed package).
        encoder_weights: ``pretrained`` (the above) or ``random`` (the same architecture
            randomly initialised, e.g. to see what LiteMedSAM's pretraining buys).
        encoder_scale: slices are resized by this factor before encoding; None: the
            encoder's default (crop size for the ViTs, as the paper; 256 for LiteMedSAM).
        encoder_pool: average-pool the frozen embeddings in-plane by this factor before the
            decoder (1: none, the paper); a coarser grid makes the decoder cheaper.
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
        encoder_mode: ``online`` (encode the augmented patch every step, the paper's way) or
            ``cached`` (encode every case once into a float16 feature store).
        encoder_dtype, decoder_dtype: ``float32`` or ``bfloat16`` autocast.
        protocol: ``paper`` (val = test, as the original code) or ``clean`` (held-out val).
        seed: seeds the model init, the patch stream and the augmentation.
        device: ``auto`` (cuda if available), ``cpu`` or ``cuda``.
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
        fast_attention: the exact, faster attention path for the encoder (sam3dlib.modeling.fast_attention).
        profile: the profile the values came from.
    """

    name: str
    table: str
    dataset: str
    encoder: str = "vit_b"
    sam_checkpoint: str | None = None
    encoder_weights: Literal["pretrained", "random"] = "pretrained"
    encoder_scale: float | None = None
    encoder_pool: int = 1
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
    encoder_mode: Literal["online", "cached"] = "online"
    encoder_dtype: Literal["float32", "bfloat16"] = "float32"
    decoder_dtype: Literal["float32", "bfloat16"] = "float32"
    protocol: Literal["paper", "clean"] = "paper"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
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
    profile: str = "paper"

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        """Rebuild from :meth:`to_dict` output (lists become tuples; unknown keys are errors)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config settings {unknown}")
        return cls(**{k: _coerce(k, v, f"config value {k!r}") for k, v in values.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExperimentConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **overrides: Any) -> "ExperimentConfig":
        """A copy with ``overrides`` (checked like :func:`get_config`'s)."""
        return dataclasses.replace(self, **_check_overrides(self.name, overrides))


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class TableEntry:
    table: str
    dataset: str
    skip: bool = True
    description: str = ""


CONFIGS: dict[str, TableEntry] = {
    "table1_synapse": TableEntry("1", "synapse", description="Synapse multi-organ CT, 8 organs"),
    "table2_acdc": TableEntry("2", "acdc", description="ACDC cardiac MRI, RV/MYO/LV"),
    "table3_lung": TableEntry("3", "lung", description="MSD Lung tumour CT"),
    "table4_brats": TableEntry("4", "brats", description="MSD BraTS, WT/ET/TC"),
    "table5_synapse_noskip": TableEntry("5", "synapse", skip=False, description="Table 5b: no skip connections"),
    "table5_acdc_noskip": TableEntry("5", "acdc", skip=False, description="Table 5a: no skip connections"),
}

#: smoke crop (D, H, W): fits the phantoms; H, W fit the smoke encoder (multiples of 16).
SMOKE_PATCH = (8, 48, 48)


def _profile_values(entry: TableEntry, profile: str) -> dict[str, Any]:
    spec = get_spec(entry.dataset)
    values: dict[str, Any] = dict(
        patch_size=tuple(spec.patch_size),
        batch_size=spec.batch_size,
        batch_dice=BATCH_DICE[entry.dataset],
        skip=entry.skip,
    )
    if profile == "paper":
        values.update(epochs=1000, iterations_per_epoch=250, val_iterations=50, encoder_mode="online")
    elif profile == "quick":
        values.update(epochs=50, iterations_per_epoch=250, val_iterations=50, encoder_mode="cached", val_every=5)
    elif profile == "smoke":
        values.update(
            encoder="vit_tiny", patch_size=SMOKE_PATCH, batch_size=2, epochs=2, iterations_per_epoch=4,
            val_iterations=2, encoder_mode="cached", num_workers=0, device="cpu", mirror_tta=False,
        )
    else:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return values


def get_config(name: str, profile: str = "smoke", **overrides: Any) -> ExperimentConfig:
    """The configuration of one paper experiment.

    Args:
        name: a key of :data:`CONFIGS` (``table1_synapse``, ``table2_acdc``, ``table3_lung``,
            ``table4_brats``, ``table5_synapse_noskip``, ``table5_acdc_noskip``).
        profile: ``paper``, ``quick`` or ``smoke``.
        **overrides: any :class:`ExperimentConfig` field.

    Raises:
        ValueError: unknown name/profile/setting, or a value of the wrong type.

    Examples::

        >>> cfg = get_config("table2_acdc", "paper", patch_size=(14, 160, 160))  # paper's text
    """
    if name not in CONFIGS:
        hint = _did_you_mean(name, CONFIGS)
        raise ValueError(f"unknown experiment {name!r}{hint}; choose one of {', '.join(CONFIGS)}")
    entry = CONFIGS[name]
    values = _profile_values(entry, profile)
    values.update(_check_overrides(name, overrides))
    return ExperimentConfig(name=name, table=entry.table, dataset=entry.dataset, profile=profile, **values)


def parse_overrides(items: list[str] | tuple[str, ...], name: str = "experiment") -> dict[str, Any]:
    """Parse ``["lr=0.01", "patch_size=16,96,96", "sam_checkpoint=none"]`` into typed values."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. lr=0.005)")
        key, raw = (s.strip() for s in item.split("=", 1))
        _check_name(name, key)
        out[key] = _parse_text(key, raw)
    return _check_overrides(name, out)


# --------------------------------------------------------------------------- validation

def _fields() -> dict[str, Any]:
    hints = typing.get_type_hints(ExperimentConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ExperimentConfig)}


def _did_you_mean(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_name(name: str, key: str) -> None:
    if key not in _fields() or key in ("name", "table", "dataset", "profile"):
        fixed = " (fixed by the experiment; choose another experiment)" if key in ("name", "table", "dataset", "profile") else ""
        raise ValueError(f"unknown setting {key!r} for {name}{fixed or _did_you_mean(key, _fields())}")


def _check_overrides(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in overrides.items():
        _check_name(name, key)
        out[key] = _coerce(key, value, f"setting {key!r} for {name}")
    return out


def _parse_text(key: str, raw: str) -> Any:
    typ = _fields()[key]
    if raw.lower() in ("none", "null", "") and _optional(typ):
        return None
    base = _base(typ)
    if base is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"setting {key!r} expects true/false, got {raw!r}")
    if typing.get_origin(base) is tuple:
        return tuple(p.strip() for p in raw.replace("x", ",").split(",") if p.strip())
    return raw


def _optional(typ) -> bool:
    return type(None) in typing.get_args(typ)


def _base(typ):
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return args[0]
    return typ


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check/convert ``value`` to the field's declared type (strings from the CLI allowed)."""
    fields = _fields()
    if key not in fields:
        raise ValueError(f"unknown {where}")
    typ = fields[key]
    if value is None:
        if _optional(typ):
            return None
        raise ValueError(f"{where} cannot be None")
    base = _base(typ)
    try:
        if typing.get_origin(base) is Literal:
            choices = typing.get_args(base)
            if value not in choices:
                raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {value!r}")
            return value
        if typing.get_origin(base) is tuple:
            n = len(typing.get_args(base))
            if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != n:
                raise ValueError(f"must be {n} integers, got {value!r}")
            return tuple(_to_int(v) for v in value)
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return _parse_text(key, value)
            raise ValueError(f"must be true/false, got {type(value).__name__} {value!r}")
        if base is int:
            return _to_int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError(f"must be a number, got {value!r}")
            return float(value)
        if base is str:
            if not isinstance(value, (str, os.PathLike)):
                raise ValueError(f"must be a string, got {type(value).__name__} {value!r}")
            return os.fspath(value)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        if msg.startswith("must"):
            raise ValueError(f"{where} {msg}") from None
        raise ValueError(f"{where} has the wrong type: {msg}") from None
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be an integer, got {type(value).__name__} {value!r}") from None


def validate(cfg: ExperimentConfig) -> None:
    """Check value ranges; raise ``ValueError`` naming the setting."""
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, _coerce(f.name, getattr(cfg, f.name), f"setting {f.name!r} of {cfg.name}"))
    get_spec(cfg.dataset)
    d, h, w = cfg.patch_size
    if d < 1:
        raise ValueError(f"{cfg.name}: patch_size {cfg.patch_size} must have depth D >= 1")
    try:
        check_crop_size(cfg.encoder, (h, w), cfg.encoder_scale, cfg.encoder_pool)
    except ValueError as exc:
        raise ValueError(f"{cfg.name}: patch_size {cfg.patch_size}: {exc}") from None
    if cfg.encoder_weights == "random" and cfg.sam_checkpoint is not None:
        raise ValueError(f"{cfg.name}: encoder_weights='random' contradicts sam_checkpoint={cfg.sam_checkpoint!r}")
    if cfg.cache_stride is not None and (min(cfg.cache_stride) < 1):
        raise ValueError(f"{cfg.name}: cache_stride {cfg.cache_stride} must be positive")
    positive = ("batch_size", "epochs", "iterations_per_epoch", "val_iterations", "val_every", "encoder_chunk_size")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ValueError(f"{cfg.name}: {key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.num_workers < 0:
        raise ValueError(f"{cfg.name}: num_workers must be >= 0, got {cfg.num_workers}")
    if cfg.lr <= 0:
        raise ValueError(f"{cfg.name}: lr must be > 0, got {cfg.lr}")
    if not 0.0 <= cfg.sw_overlap < 1.0:
        raise ValueError(f"{cfg.name}: sw_overlap must be in [0, 1), got {cfg.sw_overlap}")
    if not 0.0 <= cfg.ema_alpha < 1.0:
        raise ValueError(f"{cfg.name}: ema_alpha must be in [0, 1), got {cfg.ema_alpha}")
    if not 0.0 <= cfg.oversample_foreground <= 1.0:
        raise ValueError(f"{cfg.name}: oversample_foreground must be in [0, 1], got {cfg.oversample_foreground}")


def describe_profiles() -> str:
    """A short human-readable table of the three profiles (for docs and notebooks)."""
    lines = []
    for profile in PROFILES:
        c = get_config("table1_synapse", profile)
        lines.append(
            f"{profile:6s} {c.epochs} epochs x {c.iterations_per_epoch} its, encoder {c.encoder} "
            f"({c.encoder_mode}), crop {c.patch_size}, batch {c.batch_size}"
        )
    return "\n".join(lines)


__all__ = ["CONFIGS", "PROFILES", "ExperimentConfig", "get_config", "parse_overrides", "describe_profiles"]
