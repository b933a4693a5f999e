"""Dice and HD95 per region, per-case tables and the tables' aggregation.

Two conventions (docs/REFERENCE.md, "Evaluation"):

- ``"paper"`` follows the authors' ``inference_*.py`` scripts: HD95 is MedPy's (95th
  percentile of the pooled symmetric surface distances, connectivity 1) in **voxel units**
  unless a spacing is given, and 0 when the prediction or the ground truth is empty.
- ``"strict"``: HD95 in mm (the spacing is required). A missed structure (ground truth
  present, prediction empty) or a spurious one (prediction present, ground truth empty) is a
  failure scored :func:`worst_case_distance` (the image diagonal in mm), so a model never gains
  by missing, and counted per region (metrics ``missed`` and ``spurious``, 0/1 per case: their
  mean is the rate). NaN only when both masks are empty (nothing to measure): left out of the
  means and counted (``n_nan``).

In both conventions Dice = 2|P∩G| / (|P|+|G|) and 1 when both masks are empty. DSC is
returned in [0, 1]; the report layer multiplies by 100.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from sam3dlib.data.specs import DatasetSpec

CONVENTIONS = ("paper", "strict")
#: ``evaluate_case`` also accepts "both": paper metrics plus ``HD95_strict``.
EVALUATE_CONVENTIONS = ("paper", "strict", "both")
BRATS_AVERAGES = ("five_region", "three_region")
#: per-case 0/1 failure flags of the strict convention (a region missed / predicted where absent)
FAILURE_METRICS = ("missed", "spurious")
#: Row name of the macro average in :func:`aggregate`.
AVERAGE = "average"


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    for name, a in (("pred", pred), ("gt", gt)):
        if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must be a boolean (or 0/1 integer) mask, got dtype {a.dtype}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: pred {pred.shape} vs gt {gt.shape}")
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient of two boolean masks.

    Args:
        pred: predicted mask (bool or 0/1 integers), any shape.
        gt: ground-truth mask, same shape as ``pred``.

    Returns:
        2|P∩G| / (|P|+|G|) in [0, 1]; 1.0 when both masks are empty (the authors' evaluation scripts).

    Raises:
        ValueError: if the shapes differ. TypeError: for non-boolean, non-integer dtypes.
    """
    p, g = _as_bool_pair(pred, gt)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & g)) / total


def _border(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the array edge counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)


def _surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None) -> np.ndarray:
    """Distances pred-border -> gt-border followed by gt-border -> pred-border."""
    # Crop to the bounding box of both masks: voxels outside it are background either way, so
    # the borders and (all border voxels being inside) the distances are unchanged.
    union = pred | gt
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(union))
    pred, gt = pred[box], gt[box]
    structure = ndimage.generate_binary_structure(pred.ndim, 1)
    pred_border, gt_border = _border(pred, structure), _border(gt, structure)
    to_gt = ndimage.distance_transform_edt(~gt_border, sampling=spacing)[pred_border]
    to_pred = ndimage.distance_transform_edt(~pred_border, sampling=spacing)[gt_border]
    return np.concatenate([to_gt, to_pred])


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    values = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=np.float64)))
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise ValueError(f"spacing has {len(values)} values for a {ndim}-D mask: {values}")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be finite and positive, got {values}")
    return values


def worst_case_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The strict HD95 of a missed or spurious structure: the image diagonal, ``sqrt(sum((n_i * s_i)^2))``
    in the units of ``spacing`` (mm), larger than any distance between two voxels of the image."""
    spacing = _check_spacing(spacing, len(shape))
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def hd95(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    convention: str = "paper",
) -> float:
    """95th percentile Hausdorff distance between the surfaces of two boolean masks.

    Equals ``medpy.metric.binary.hd95(pred, gt, voxelspacing=spacing)`` (connectivity 1) for
    non-empty masks: borders are the mask voxels removed by one binary erosion with the
    face-connected structure, and the 95th percentile (linear interpolation) is taken over
    the pooled distances in both directions.

    Args:
        pred: predicted mask (bool or 0/1 integers), any dimension.
        gt: ground-truth mask, same shape.
        spacing: voxel size per axis (same axis order as the arrays), or one value for all.
            Defaults to None: unit spacing, i.e. voxel units (the authors' scripts' convention only).
        convention: ``"paper"`` (0 when either mask is empty: the authors' scripts) or
            ``"strict"`` (``spacing`` required; :func:`worst_case_distance` when exactly one mask
            is empty, NaN when both are). Defaults to "paper".

    Returns:
        The HD95 in the units of ``spacing`` (voxels if None).

    Raises:
        ValueError: for differing shapes, a bad spacing, an unknown convention, or a missing
            spacing under ``"strict"``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    p, g = _as_bool_pair(pred, gt)
    if convention == "strict" and spacing is None:
        raise ValueError("the strict convention reports HD95 in mm: pass the voxel spacing")
    spacing = _check_spacing(spacing, p.ndim)
    if not p.any() or not g.any():
        if convention == "paper":
            return 0.0
        return float("nan") if not p.any() and not g.any() else worst_case_distance(p.shape, spacing)
    return float(np.percentile(_surface_distances(p, g, spacing), 95))


def region_masks(label_map: np.ndarray, regions: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Boolean mask per region, each the union of its label values."""
    return {name: np.isin(label_map, np.asarray(values)) for name, values in regions.items()}


def _as_label_map(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.array_equal(a, np.round(a)):
        return a.astype(np.int64)
    raise TypeError(f"{name} must be an integer label map, got dtype {a.dtype} with non-integer values")


def evaluate_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spec: DatasetSpec,
    spacing: Sequence[float] | None = None,
    convention: str = "paper",
    include_extra: bool = True,
) -> dict[str, dict[str, float]]:
    """DSC and HD95 of every scored region of one case.

    Used by both the validation inside training and ``sam3d evaluate``, so the two agree.

    Args:
        pred: predicted label map (integers), any axis order.
        gt: ground-truth label map of the same shape and axis order.
        spec: the dataset's spec; regions are ``spec.regions`` (table order) and, if
            ``include_extra``, ``spec.extra_regions`` (BraTS ED, NET), each a union of labels.
        spacing: voxel size in the arrays' axis order. Under "paper" HD95 is in voxels when
            None (the authors' scripts) and in mm when given; required for "strict" and "both"
            (where it is used for ``HD95_strict`` only: ``HD95`` stays the authors' scripts', in voxels).
        convention: "paper", "strict", or "both" (paper's DSC and HD95 plus ``HD95_strict``).
            Defaults to "paper".
        include_extra: also score ``spec.extra_regions``. Defaults to True.

    Returns:
        ``{region: {"DSC": ..., "HD95": ...}}``, plus ``"HD95_strict"`` for "both", plus
        ``"missed"`` and ``"spurious"`` (0/1) for "strict" and "both".

    Raises:
        ValueError: for differing shapes or an unknown convention. TypeError: for
            non-integer label maps.
    """
    if convention not in EVALUATE_CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {', '.join(EVALUATE_CONVENTIONS)}")
    pred, gt = _as_label_map("pred", pred), _as_label_map("gt", gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: pred {pred.shape} vs gt {gt.shape}")
    if convention in ("strict", "both") and spacing is None:
        raise ValueError(f"convention {convention!r} reports HD95 in mm: pass the voxel spacing")
    regions = dict(spec.regions)
    if include_extra:
        regions.update(spec.extra_regions)
    pred_masks, gt_masks = region_masks(pred, regions), region_masks(gt, regions)
    out: dict[str, dict[str, float]] = {}
    for name in regions:
        p, g = pred_masks[name], gt_masks[name]
        scores = {"DSC": dice(p, g)}
        if convention == "strict":
            scores["HD95"] = hd95(p, g, spacing, "strict")
        else:
            scores["HD95"] = hd95(p, g, spacing if convention == "paper" else None, "paper")
        if convention == "both":
            scores["HD95_strict"] = hd95(p, g, spacing, "strict")
        if convention != "paper":
            has_p, has_g = bool(p.any()), bool(g.any())
            scores["missed"] = float(has_g and not has_p)
            scores["spurious"] = float(has_p and not has_g)
        out[name] = scores
    return out


def per_case_frame(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> pd.DataFrame:
    """Long table ``case_id, region, metric, value`` of ``{case_id: evaluate_case(...)}``."""
    rows = [
        (case_id, region, metric, float(value))
        for case_id, regions in results.items()
        for region, metrics in regions.items()
        for metric, value in metrics.items()
    ]
    return pd.DataFrame(rows, columns=["case_id", "region", "metric", "value"])


def average_regions(spec: DatasetSpec, brats_average: str = "five_region") -> tuple[str, ...]:
    """Regions whose means form the table's "average" (BraTS: 5 regions by default, as the code)."""
    if brats_average not in BRATS_AVERAGES:
        raise ValueError(f"unknown brats_average {brats_average!r}; choose one of {', '.join(BRATS_AVERAGES)}")
    if spec.name == "brats" and brats_average == "five_region":
        return ("ET", "TC", "WT", "ED", "NET")
    return tuple(spec.regions)


def aggregate(df: pd.DataFrame, spec: DatasetSpec, brats_average: str = "five_region") -> pd.DataFrame:
    """Per-region means over cases and the table's macro "average".

    NaNs (strict convention only) are left out of each region's mean and counted in ``n_nan``;
    the authors' convention never produces any, so its means are plain means. The average row is
    the plain mean of the per-region means of :func:`average_regions`.

    Args:
        df: the output of :func:`per_case_frame`.
        spec: the dataset's spec (region order, which regions form the average).
        brats_average: "five_region" (ET, TC, WT, ED, NET: the authors' script, the default)
            or "three_region" (WT, ET, TC: the paper's text). Ignored for other datasets.

    Returns:
        Long table ``region, metric, mean, n_cases, n_nan``: the regions in table order, then
        the extra regions, then ``"average"`` for every metric.

    Raises:
        ValueError: if columns are missing or the averaged regions are not all in ``df``.
    """
    missing = {"case_id", "region", "metric", "value"} - set(df.columns)
    if missing:
        raise ValueError(f"per-case frame lacks columns {sorted(missing)}; build it with per_case_frame()")
    averaged = average_regions(spec, brats_average)
    present = set(df["region"])
    absent = [r for r in averaged if r not in present]
    if absent:
        raise ValueError(
            f"the {spec.name} average needs regions {list(averaged)} but {absent} are not in the per-case frame"
            + (" (evaluate with include_extra=True or use brats_average='three_region')" if spec.name == "brats" else "")
        )
    order = [r for r in (*spec.regions, *spec.extra_regions) if r in present]
    order += sorted(present - set(order))
    rows: list[dict[str, Any]] = []
    for metric in dict.fromkeys(df["metric"]):
        sub = df[df["metric"] == metric]
        means = {}
        for region in order:
            values = sub.loc[sub["region"] == region, "value"].to_numpy(dtype=np.float64)
            n_nan = int(np.isnan(values).sum())
            mean = float(np.mean(values[~np.isnan(values)])) if n_nan < len(values) else float("nan")
            means[region] = mean
            rows.append({"region": region, "metric": metric, "mean": mean, "n_cases": len(values), "n_nan": n_nan})
        avg = float(np.mean([means[r] for r in averaged]))
        n_cases = int(sub.loc[sub["region"].isin(averaged), "case_id"].nunique())
        n_nan = int(sub.loc[sub["region"].isin(averaged), "value"].isna().sum())
        rows.append({"region": AVERAGE, "metric": metric, "mean": avg, "n_cases": n_cases, "n_nan": n_nan})
    return pd.DataFrame(rows, columns=["region", "metric", "mean", "n_cases", "n_nan"])


def summary_table(summary: pd.DataFrame, dsc_percent: bool = True) -> pd.DataFrame:
    """Wide view of :func:`aggregate`: one row per metric, one column per region (table layout)."""
    wide = summary.pivot(index="metric", columns="region", values="mean")
    wide = wide[list(dict.fromkeys(summary["region"]))].reindex(list(dict.fromkeys(summary["metric"])))
    if dsc_percent and "DSC" in wide.index:
        wide.loc["DSC"] = wide.loc["DSC"] * 100.0
    wide.columns.name = None
    return wide
