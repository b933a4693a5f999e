"""Planning a dataset from its data: nnU-Net's rules applied to the dataset's fingerprint.

The fingerprint is what ``sam3d prepare`` measures on every labelled case (spacing, shape
after cropping to the nonzero box, foreground intensities of CT channels, voxels per class).
From it, for a user's dataset (:func:`make_plan`):

* **target spacing**: nnU-Net v1 ``ExperimentPlanner3D_v21`` (:func:`target_spacing_v21`),
  the rule that prepared the paper's four datasets;
* **normalisation per channel** (nnU-Net's rule by channel name): a ``CT`` channel is clipped
  to the 0.5/99.5 percentiles of its foreground voxels pooled over the dataset and z-scored
  with their mean/sd (:func:`ct_statistics`); any other channel is z-scored per case, inside
  the nonzero mask when cropping shrinks the median case by more than 25 % (:func:`use_nonzero_mask`);
* **crop size** (:func:`plan_patch_size`): nnU-Net v1's start (a patch proportional to
  1/spacing, at most 512 voxels along the coarsest axis, at most the median shape), H and W
  rounded up to multiples of the encoder's stride, then the axis largest relative to the
  median shape shrunk until two samples fit the memory budget;
* **batch size** (:func:`plan_batch_size`): as many samples as fit the budget, at least 2,
  at most what covers 5 % of the dataset's voxels (nnU-Net v1);
* **classes and regions**: every foreground label is a region; unions declared in
  ``dataset.json`` (nnU-Net v2 list values) or given by the user are added (one made of a
  single label renames that label's region);
* **splits**: the user's ``splits_final.json``, else a seeded 5-fold split (:func:`kfold_splits`).

Every value can be overridden (:data:`OVERRIDABLE`). The memory model is passed in
(:class:`PlannerSettings`; the CLI uses :func:`sam3dlib.modeling.memory.training_bytes_per_voxel`).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam3dlib.data.specs import PLAN_KEY, DatasetSpec
from sam3dlib.data.splits import MIN_FOLDS, check_num_folds
from sam3dlib.utils.errors import ConfigError
from sam3dlib.utils.values import as_bool, as_float, as_int, as_int_tuple

#: nnU-Net v1: every 10th foreground voxel of every case feeds the CT statistics
ANALYSIS_SAMPLE_EVERY = 10
#: nnU-Net v1: the initial patch has at most this many voxels along the coarsest axis
INITIAL_PATCH_VOXELS = 512
#: nnU-Net v1 ``unet_min_batch_size``
MIN_BATCH_SIZE = 2
#: nnU-Net v1 ``batch_size_covers_max_percent_of_dataset``
MAX_BATCH_FRACTION = 0.05
#: nnU-Net v2's folds and KFold seed
NUM_FOLDS = 5
SPLIT_SEED = 12345
DEFAULT_MEMORY_GB = 8.0
#: plan values a user may set (``sam3d prepare --plan KEY=VALUE``)
OVERRIDABLE = ("target_spacing", "patch_size", "batch_size", "memory_gb", "normalization", "regions",
               "batch_dice", "num_folds")


@dataclass(frozen=True)
class PlannerSettings:
    """How to plan.

    Args:
        bytes_per_voxel: ``(in_channels, num_classes) -> bytes`` of training memory per voxel of
            one sample (:func:`sam3dlib.modeling.memory.training_bytes_per_voxel`).
        fixed_bytes: memory that does not grow with the crop (decoder weights, gradients, momentum).
        memory_gb: the budget (GiB) one training step may use.
        stride: H and W are multiples of this (the encoder's patch, 16 pixels for SAM's ViTs).
    """

    bytes_per_voxel: Callable[[int, int], float]
    fixed_bytes: Callable[[int, int], float] = field(default=lambda c, k: 0.0)
    memory_gb: float = DEFAULT_MEMORY_GB
    stride: int = 16


# ---------------------------------------------------------------- rules


def target_spacing_v21(spacings: np.ndarray, shapes: np.ndarray) -> list[float]:
    """nnU-Net v1 ``ExperimentPlanner3D_v21.get_target_spacing`` on (N, 3) zyx spacings and shapes.

    The per-axis median spacing; if the coarsest axis is more than 3x the finest and has fewer
    than 1/3 of its voxels, that axis takes the 10th percentile of its spacings instead (kept
    above the other axes' spacing).
    """
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.percentile(spacings, 50, axis=0)
    median_shape = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    other = [i for i in range(3) if i != worst]
    aniso_spacing = target[worst] > 3 * min(target[other])
    aniso_voxels = median_shape[worst] * 3 < min(median_shape[other])
    if aniso_spacing and aniso_voxels:
        t = float(np.percentile(spacings[:, worst], 10))
        if t < max(target[other]):
            t = max(max(target[other]), t) + 1e-5
        target[worst] = t
    return [float(x) for x in target]


def ct_statistics(foreground: np.ndarray, n_cases: int) -> dict[str, Any]:
    """nnU-Net's CT normalisation values from pooled foreground intensities (one channel)."""
    fg = np.asarray(foreground)  # float32 as read, as nnU-Net (and the paper's stores) computed them
    if fg.size == 0:
        raise ConfigError("CT normalisation needs foreground voxels; no case has a nonzero label")
    return {"scheme": "CT", "percentile_00_5": float(np.percentile(fg, 0.5)),
            "percentile_99_5": float(np.percentile(fg, 99.5)), "mean": float(fg.mean()), "sd": float(fg.std()),
            "computed_on": f"every {ANALYSIS_SAMPLE_EVERY}th foreground voxel of {n_cases} labelled cases (as nnU-Net v1)"}


def crop_size_ratio(crop_shapes: np.ndarray, shapes: np.ndarray) -> float:
    """Median over cases of (voxels after cropping to the nonzero box) / (voxels before)."""
    return float(np.median(np.prod(np.asarray(crop_shapes, float), 1) / np.prod(np.asarray(shapes, float), 1)))


def use_nonzero_mask(crop_shapes: np.ndarray, shapes: np.ndarray) -> bool:
    """nnU-Net v1: z-score inside the nonzero mask iff cropping shrinks the median case by > 25 %."""
    return crop_size_ratio(crop_shapes, shapes) < 0.75


def is_ct(channel_name: str) -> bool:
    """nnU-Net's rule: a channel named ``CT`` gets CT normalisation, any other a z-score."""
    return channel_name.strip().upper() == "CT"


def median_shape(shapes_after_crop: np.ndarray, spacings: np.ndarray, target: Sequence[float]) -> np.ndarray:
    """Median (D, H, W) of the cases after resampling to ``target`` (nnU-Net's ``new_median_shape``)."""
    shapes = np.asarray(shapes_after_crop, float) * np.asarray(spacings, float) / np.asarray(target, float)
    return np.median(np.round(shapes), axis=0)


def _round_up(n: float, m: int) -> int:
    return max(m, int(math.ceil(n / m) * m))


def plan_patch_size(median: Sequence[float], target: Sequence[float], sample_bytes: Callable[[Sequence[int]], float],
                    budget_bytes: float, stride: int = 16) -> tuple[int, int, int]:
    """The crop (D, H, W): nnU-Net v1's initial patch shrunk until ``MIN_BATCH_SIZE`` samples fit.

    Args:
        median: median shape of the resampled cases (D, H, W).
        target: target spacing (z, y, x) in mm.
        sample_bytes: training memory of one sample of a given crop.
        budget_bytes: memory available to the samples.
        stride: H and W are multiples of it.

    Raises:
        ConfigError: not even a (1, stride, stride) crop fits the budget.
    """
    med = np.maximum(np.asarray(median, float), 1)
    p = 1 / np.asarray(target, float)
    p = p / p.mean()
    p = p / p.min() * INITIAL_PATCH_VOXELS
    patch = [max(1, round(min(a, b))) for a, b in zip(p, med)]
    patch = [patch[0], _round_up(patch[1], stride), _round_up(patch[2], stride)]
    steps = (1, stride, stride)
    minimum = (1, stride, stride)
    while sample_bytes(patch) * MIN_BATCH_SIZE > budget_bytes:
        ratios = [patch[i] / med[i] if patch[i] > minimum[i] else -1 for i in range(3)]
        axis = 2 - int(np.argmax(ratios[::-1]))  # the last of equal ratios, as nnU-Net's argsort(...)[-1]
        if ratios[axis] < 0:
            raise ConfigError(f"memory budget of {budget_bytes / 2**30:.2f} GiB is too small for even a "
                             f"(1, {stride}, {stride}) crop with batch size {MIN_BATCH_SIZE}")
        patch[axis] = max(minimum[axis], patch[axis] - steps[axis])
    return tuple(int(x) for x in patch)  # type: ignore[return-value]


def plan_batch_size(patch: Sequence[int], sample_bytes: float, budget_bytes: float, dataset_voxels: float) -> int:
    """nnU-Net v1: as many samples as fit ``budget_bytes``, at least :data:`MIN_BATCH_SIZE`, at most
    what covers :data:`MAX_BATCH_FRACTION` of the dataset's voxels (but not below the minimum)."""
    fit = int(budget_bytes // max(sample_bytes, 1.0))
    cap = max(round(MAX_BATCH_FRACTION * dataset_voxels / float(np.prod(patch))), MIN_BATCH_SIZE)
    return max(1, min(max(fit, 1), cap))


def kfold_splits(case_ids: Sequence[str], num_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict]:
    """A seeded k-fold split ``[{"train": [...], "val": [...]}]`` (sorted ids shuffled, dealt round robin).

    With fewer cases than folds, there are as many folds as cases (leave one out).

    Raises:
        ConfigError: fewer than 2 cases, or ``num_folds`` < 2 (:func:`sam3dlib.data.splits.check_num_folds`).
    """
    ids = sorted(case_ids)
    check_num_folds(num_folds, len(ids), "kfold_splits", explicit=False)
    k = min(num_folds, len(ids))
    order = ids[:]
    random.Random(seed).shuffle(order)
    folds = []
    for f in range(k):
        val = sorted(order[f::k])
        folds.append({"train": [c for c in ids if c not in set(val)], "val": val})
    return folds


# ---------------------------------------------------------------- overrides


def parse_plan_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["patch_size=16,128,128", "regions=tumour:1,2", "normalization=CT,zscore"]`` -> typed values.

    Raises:
        ConfigError: an unknown key or a malformed value (the message names the key).
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"plan override {item!r} must look like key=value (keys: {', '.join(OVERRIDABLE)})")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key not in OVERRIDABLE:
            raise ConfigError(f"unknown plan setting {key!r}; choose one of {', '.join(OVERRIDABLE)}")
        try:
            out[key] = _parse_value(key, raw)
        except ValueError as exc:  # int('abc') and the checks below
            raise ConfigError(f"plan setting {key}={raw!r}: {exc}") from None
    return out


def check_target_spacing(value: Any, where: str = "target_spacing",
                         error: type[Exception] = ConfigError) -> list[float]:
    """The one check of a target spacing: three positive numbers z, y, x in mm, given as a
    sequence (``[3, 0.8, 0.8]``, ``["3", "0.8", "0.8"]`` from a command line) or a string
    (``"3,0.8,0.8"``, ``"3x0.8x0.8"``).

    Raises:
        ``error`` (default ConfigError): naming ``where`` and the value.
    """
    parts = [p for p in value.replace("x", ",").split(",") if p.strip()] if isinstance(value, str) else value
    message = f"{where}: expected three positive numbers z, y, x (mm), got {value!r}"
    if not isinstance(parts, Sequence) or len(parts) != 3:
        raise error(message)
    try:
        spacing = [as_float(p, where, error) for p in parts]
    except error:
        raise error(message) from None
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise error(message)
    return spacing


def _parse_value(key: str, raw: str) -> Any:
    if key == "target_spacing":
        return check_target_spacing(raw, key)
    if key == "patch_size":
        v = list(as_int_tuple(raw, 3, key))
        if min(v) < 1:
            raise ConfigError("expected three positive integers D,H,W")
        return v
    if key in ("batch_size", "num_folds"):
        v, least = as_int(raw, key), MIN_FOLDS if key == "num_folds" else 1
        if v < least:
            raise ConfigError(f"expected an integer >= {least}")
        return v
    if key == "memory_gb":
        v = as_float(raw, key)
        if not v > 0:
            raise ConfigError("expected a positive number (GiB)")
        return v
    if key == "batch_dice":
        return as_bool(raw, key)
    if key == "normalization":
        v = [p.lower() for p in raw.split(",") if p.strip()]
        bad = [p for p in v if p not in ("ct", "zscore", "zscore_nonzero")]
        if bad:
            raise ConfigError(f"{bad}: each channel is ct, zscore or zscore_nonzero")
        return v
    regions = {}  # regions: "WT:1,2,3;TC:2,3"
    for part in raw.split(";"):
        name, _, labels = part.partition(":")
        if not name.strip() or not labels.strip():
            raise ConfigError("expected NAME:l1,l2[;NAME:...]")
        regions[name.strip()] = [as_int(x, f"region {name.strip()!r}") for x in labels.split(",")]
    return regions


# ---------------------------------------------------------------- the plan


@dataclass
class Fingerprint:
    """Per-case measurements of a dataset (lists over the labelled cases, axes z, y, x)."""

    case_ids: list[str]
    spacings: np.ndarray  # N x 3 mm
    shapes: np.ndarray  # N x 3 voxels, as read
    crop_shapes: np.ndarray  # N x 3 voxels, after cropping to the nonzero box
    foreground: dict[int, np.ndarray]  # channel -> pooled foreground samples (CT channels only)
    class_voxels: np.ndarray  # K voxel counts per label over the dataset

    @classmethod
    def from_cases(cls, results: Sequence[dict], num_classes: int) -> Fingerprint:
        """From the per-case dicts of the analysis pass (``sam3dlib.data.prepare``)."""
        fg: dict[int, list] = {}
        counts = np.zeros(num_classes, dtype=np.int64)
        for r in results:
            for c, v in r.get("fg", {}).items():
                fg.setdefault(int(c), []).append(v)
            if "class_voxels" in r:
                counts += np.asarray(r["class_voxels"][:num_classes], dtype=np.int64)
        return cls([r["case_id"] for r in results], np.array([r["spacing"] for r in results], float),
                   np.array([r["shape"] for r in results], float), np.array([r["shape_after_crop"] for r in results], float),
                   {c: np.concatenate(v) for c, v in fg.items()}, counts)


def plan_normalization(channel_names: Sequence[str], fp: Fingerprint, chosen: Sequence[str] | None = None) -> dict:
    """Per-channel normalisation (store meta ``normalization`` with scheme ``per_channel``)."""
    names = list(channel_names)
    if chosen is not None and len(chosen) != len(names):
        raise ConfigError(f"normalization override gives {len(chosen)} scheme(s) for {len(names)} channel(s)")
    mask = use_nonzero_mask(fp.crop_shapes, fp.shapes)
    channels = []
    for c, name in enumerate(names):
        how = chosen[c] if chosen is not None else ("ct" if is_ct(name) else ("zscore_nonzero" if mask else "zscore"))
        if how == "ct":
            channels.append(ct_statistics(fp.foreground.get(c, np.zeros(0)), len(fp.case_ids)))
        else:
            channels.append({"scheme": "nonCT", "use_nonzero_mask": how == "zscore_nonzero"})
    return {"scheme": "per_channel", "channels": channels, "channel_names": names,
            "median_crop_size_ratio": crop_size_ratio(fp.crop_shapes, fp.shapes)}


def make_plan(name: str, channel_names: Sequence[str], labels: dict[int, str], fp: Fingerprint,
              settings: PlannerSettings, overrides: dict[str, Any] | None = None,
              declared_regions: dict[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """The dataset-level part of a prepared store's ``dataset.json`` for a user's dataset.

    Args:
        name: the dataset's name.
        channel_names: one name per channel (``CT`` selects CT normalisation).
        labels: label value -> name (0 = background).
        fp: the fingerprint of the labelled cases.
        settings: memory model, budget and stride.
        overrides: values of :data:`OVERRIDABLE` that replace the planned ones.
        declared_regions: unions of labels to report besides each label (e.g. from ``dataset.json``);
            one made of a single label renames that label's region (``GM: [1]`` for ``grey matter``).

    Returns:
        ``{"dataset", "num_channels", "num_classes", "labels", "target_spacing", "normalization",
        "plan": DatasetSpec.to_dict(), "planning": {how each value was found}}``.

    Raises:
        ConfigError: a bad override (names it) or a budget too small for any crop.
    """
    ov = dict(overrides or {})
    unknown = sorted(set(ov) - set(OVERRIDABLE))
    if unknown:
        raise ConfigError(f"unknown plan setting(s) {unknown}; choose from {', '.join(OVERRIDABLE)}")
    src: dict[str, str] = {}
    k = max(labels) + 1
    c = len(channel_names)
    if "target_spacing" in ov:
        target, src["target_spacing"] = [float(t) for t in ov["target_spacing"]], "override"
    else:
        target = target_spacing_v21(fp.spacings, fp.crop_shapes)
        src["target_spacing"] = f"nnU-Net v1 ExperimentPlanner3D_v21 rule on {len(fp.case_ids)} cases"
    norm = plan_normalization(channel_names, fp, ov.get("normalization"))
    src["normalization"] = "override" if "normalization" in ov else "nnU-Net rule by channel name (CT vs other)"
    med = median_shape(fp.crop_shapes, fp.spacings, target)
    memory_gb = float(ov.get("memory_gb", settings.memory_gb))
    per_voxel = float(settings.bytes_per_voxel(c, k))
    budget = memory_gb * 2**30 - float(settings.fixed_bytes(c, k))
    stride = settings.stride

    def sample_bytes(p: Sequence[int]) -> float:
        return per_voxel * float(np.prod(p))

    if "patch_size" in ov:
        patch = tuple(int(x) for x in ov["patch_size"])
        if patch[1] % stride or patch[2] % stride:
            raise ConfigError(f"plan setting patch_size={list(patch)}: H and W must be multiples of the encoder's "
                             f"stride {stride}")
        src["patch_size"] = "override"
    else:
        patch = plan_patch_size(med, target, sample_bytes, budget, stride)
        src["patch_size"] = f"nnU-Net v1 rule, H and W multiples of {stride}, {MIN_BATCH_SIZE} samples in {memory_gb:g} GiB"
    dataset_voxels = float(np.sum(np.prod(np.round(fp.crop_shapes * fp.spacings / np.asarray(target)), 1)))
    if "batch_size" in ov:
        batch, src["batch_size"] = int(ov["batch_size"]), "override"
    else:
        batch = plan_batch_size(patch, sample_bytes(patch), budget, dataset_voxels)
        src["batch_size"] = (f"nnU-Net v1 rule: fits {memory_gb:g} GiB, >= {MIN_BATCH_SIZE}, "
                             f"<= {MAX_BATCH_FRACTION:.0%} of the dataset's voxels")
    regions = {labels[v]: (v,) for v in sorted(labels) if v != 0}
    extra = {str(n): tuple(int(x) for x in m) for n, m in {**(declared_regions or {}), **ov.get("regions", {})}.items()}
    for n, m in extra.items():
        # a declared region equal to one label's region renames it (one name per scored region)
        same = [r for r, v in regions.items() if v == m and r != n and r in {labels.get(x) for x in m}]
        regions = {(n if r in same else r): v for r, v in regions.items()}
        regions[n] = m
    spec = DatasetSpec(name=name, num_channels=c, num_classes=k, labels=dict(labels), regions=regions,
                       patch_size=patch, batch_size=batch,  # type: ignore[arg-type]
                       modality="CT" if all(is_ct(n) for n in channel_names) else "MRI",
                       target_spacing=tuple(target), batch_dice=bool(ov.get("batch_dice", False)),  # type: ignore[arg-type]
                       channel_names=tuple(channel_names))
    try:
        DatasetSpec.from_dict(spec.to_dict())  # checks the regions against the labels
    except ValueError as exc:
        raise ConfigError(f"plan setting regions: {exc}") from None
    total = max(int(fp.class_voxels.sum()), 1)
    planning = {
        "sources": src, "median_shape": [float(x) for x in med], "memory_gb": memory_gb,
        "training_bytes_per_voxel": per_voxel, "stride": stride,
        "estimated_training_memory_gb": (sample_bytes(patch) * batch + float(settings.fixed_bytes(c, k))) / 2**30,
        "class_voxel_fraction": {labels[v]: float(fp.class_voxels[v]) / total for v in sorted(labels)},
        "absent_classes": [labels[v] for v in sorted(labels) if v and fp.class_voxels[v] == 0],
        "num_cases": len(fp.case_ids),
    }
    return {"dataset": name, "num_channels": c, "num_classes": k, "labels": {str(v): n for v, n in sorted(labels.items())},
            "target_spacing": target, "target_spacing_source": src["target_spacing"], "normalization": norm,
            PLAN_KEY: spec.to_dict(), "planning": planning}


def describe_plan(meta: dict) -> str:
    """A few lines for ``sam3d prepare`` and notebooks: the plan's values and where they came from."""
    p, pl = meta[PLAN_KEY], meta.get("planning", {})
    src = pl.get("sources", {})
    norm = meta["normalization"]
    chans = ", ".join(f"{n}: {'CT clip+z-score' if ch['scheme'] == 'CT' else 'z-score' + (' in nonzero mask' if ch.get('use_nonzero_mask') else '')}"
                      for n, ch in zip(norm.get("channel_names", p.get("channel_names", [])), norm.get("channels", [])))
    lines = [
        (f"dataset {p['name']}: {pl.get('num_cases', '?')} training cases, {p['num_channels']} channel(s), "
        f"{p['num_classes']} classes"),
        f"target spacing (z, y, x) mm: {[round(t, 4) for t in meta['target_spacing']]} ({src.get('target_spacing', '')})",
        f"normalisation: {chans}",
        f"median shape after resampling: {[int(x) for x in pl.get('median_shape', [])]}",
        f"crop (D, H, W): {p['patch_size']} ({src.get('patch_size', '')})",
        (f"batch size: {p['batch_size']} ({src.get('batch_size', '')}); "
        f"estimated training memory {pl.get('estimated_training_memory_gb', float('nan')):.2f} GiB"),
        "regions: " + ", ".join(f"{n}={list(v)}" for n, v in p["regions"].items()),
    ]
    frac = pl.get("class_voxel_fraction")
    if frac:
        lines.append("class voxel share: " + ", ".join(f"{n} {f:.2%}" for n, f in frac.items()))
    if pl.get("absent_classes"):
        lines.append(f"WARNING: class(es) {pl['absent_classes']} never occur in the training labels")
    return "\n".join(lines)
