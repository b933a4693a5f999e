"""Metrics: equality with MedPy, empty-mask conventions, region unions, aggregation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from sam3dlib.data.specs import get_spec
from sam3dlib.evaluation import metrics


def _random_pair(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Blobby non-empty masks of a random small 3D shape, plus an anisotropic spacing."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(6, 18, size=3))
    masks = []
    for _ in range(2):
        m = ndimage.binary_opening(rng.random(shape) < rng.uniform(0.3, 0.7))
        m[tuple(s // 2 for s in shape)] = True  # never empty
        masks.append(m)
    spacing = tuple(float(s) for s in rng.choice([0.7, 1.0, 1.5, 3.0, 5.0], size=3))
    return masks[0], masks[1], spacing


@pytest.mark.parametrize("seed", range(10))
def test_hd95_and_dice_equal_medpy(seed: int) -> None:
    pred, gt, spacing = _random_pair(seed)
    assert metrics.dice(pred, gt) == pytest.approx(medpy_binary.dc(pred, gt), abs=1e-12)
    assert metrics.hd95(pred, gt) == pytest.approx(medpy_binary.hd95(pred, gt), abs=1e-9)
    assert metrics.hd95(pred, gt, spacing) == pytest.approx(
        medpy_binary.hd95(pred, gt, voxelspacing=spacing), abs=1e-9
    )
    assert metrics.hd95(pred, gt, spacing, "strict") == pytest.approx(
        medpy_binary.hd95(pred, gt, voxelspacing=spacing), abs=1e-9
    )


def test_hd95_small_object_far_from_origin_matches_medpy() -> None:
    # masks touching the array edge, and a small object away from it (bounding-box cropping)
    gt = np.zeros((20, 20, 20), bool)
    gt[0:5, 0:5, 0:5] = True
    pred = np.zeros_like(gt)
    pred[12:15, 13:20, 2:4] = True
    for spacing in (None, (2.5, 0.8, 0.8)):
        assert metrics.hd95(pred, gt, spacing) == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=spacing))


def _mask(*voxels: tuple[int, int, int]) -> np.ndarray:
    m = np.zeros((4, 5, 6), bool)
    for v in voxels:
        m[v] = True
    return m


EMPTY, ONE = _mask(), _mask((1, 2, 3))
#: strict HD95 of a missed/spurious structure: the image diagonal in mm (unit spacing here)
DIAGONAL = math.sqrt(sum(n * n for n in EMPTY.shape))
#: (pred, gt, convention, expected DSC, expected HD95); NaN means NaN
EMPTY_CASES = [
    (EMPTY, EMPTY, "paper", 1.0, 0.0),
    (ONE, EMPTY, "paper", 0.0, 0.0),
    (EMPTY, ONE, "paper", 0.0, 0.0),
    (EMPTY, EMPTY, "strict", 1.0, math.nan),
    (ONE, EMPTY, "strict", 0.0, DIAGONAL),
    (EMPTY, ONE, "strict", 0.0, DIAGONAL),
    (ONE, ONE, "strict", 1.0, 0.0),
]


@pytest.mark.parametrize("pred,gt,convention,dsc,hd", EMPTY_CASES)
def test_empty_mask_conventions(pred, gt, convention, dsc, hd) -> None:
    assert metrics.dice(pred, gt) == dsc
    value = metrics.hd95(pred, gt, spacing=(1.0, 1.0, 1.0), convention=convention)
    assert math.isnan(value) if math.isnan(hd) else value == hd


def test_strict_hd95_never_improves_by_missing() -> None:
    """Under the strict convention a missed structure must not lower the mean HD95
    (it scored NaN and was left out of the mean, so missing a spleen improved the average)."""
    spec = get_spec("lung")
    gt = np.zeros((6, 6, 6), np.int16)
    gt[1:4, 1:4, 1:4] = 1
    near = np.zeros_like(gt)
    near[1:4, 1:4, 2:5] = 1  # found, 1 mm off
    cases = {"found": metrics.evaluate_case(near, gt, spec, spacing=(1.0, 1.0, 1.0), convention="strict"),
             "missed": metrics.evaluate_case(np.zeros_like(gt), gt, spec, spacing=(1.0, 1.0, 1.0), convention="strict")}
    summary = metrics.aggregate(metrics.per_case_frame(cases), spec).set_index(["region", "metric"])
    only_found = cases["found"]["tumour"]["HD95"]
    assert summary.loc[("tumour", "HD95"), "mean"] > only_found
    assert summary.loc[("tumour", "HD95"), "n_nan"] == 0
    assert summary.loc[("tumour", "missed"), "mean"] * summary.loc[("tumour", "missed"), "n_cases"] == 1


def test_hd95_units_voxels_vs_mm() -> None:
    gt, pred = _mask((0, 0, 0)), _mask((2, 0, 0))  # two voxels apart along axis 0
    assert metrics.hd95(pred, gt) == 2.0
    assert metrics.hd95(pred, gt, spacing=(3.0, 1.0, 1.0)) == 6.0
    assert metrics.hd95(pred, gt, spacing=(3.0, 1.0, 1.0), convention="strict") == 6.0


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: metrics.hd95(ONE, ONE, convention="strict"), ValueError, "spacing"),
        (lambda: metrics.hd95(ONE, ONE, convention="medpy"), ValueError, "convention"),
        (lambda: metrics.hd95(ONE, ONE, spacing=(1.0, 1.0)), ValueError, "spacing has 2 values"),
        (lambda: metrics.hd95(ONE, ONE[:2]), ValueError, r"\(4, 5, 6\) vs gt \(2, 5, 6\)"),
        (lambda: metrics.dice(ONE.astype(np.float32), ONE), TypeError, "float32"),
    ],
)
def test_bad_input_errors(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_evaluate_case_brats_regions_are_label_unions() -> None:
    spec = get_spec("brats")
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[0], gt[1], gt[2] = 1, 2, 3  # ED, NET, ET slabs
    pred = np.zeros_like(gt)
    pred[0], pred[1], pred[2] = 3, 2, 1  # ED and ET swapped
    res = metrics.evaluate_case(pred, gt, spec)
    assert list(res) == ["WT", "ET", "TC", "ED", "NET"]
    assert res["WT"]["DSC"] == 1.0  # {1,2,3} identical
    assert res["TC"]["DSC"] == pytest.approx(2 * 16 / 64)  # {2,3}: slabs 1,2 vs 0,1
    assert res["ET"]["DSC"] == 0.0 and res["ED"]["DSC"] == 0.0 and res["NET"]["DSC"] == 1.0
    assert res["ET"]["HD95"] == pytest.approx(medpy_binary.hd95(pred == 3, gt == 3))
    assert list(metrics.evaluate_case(pred, gt, spec, include_extra=False)) == ["WT", "ET", "TC"]


def test_evaluate_case_conventions() -> None:
    spec = get_spec("lung")
    gt = np.zeros((5, 6, 7), np.int16)
    gt[1:3, 1:3, 1:3] = 1
    pred = np.zeros_like(gt)
    pred[1:3, 1:3, 2:5] = 1
    paper = metrics.evaluate_case(pred, gt, spec)["tumour"]
    strict = metrics.evaluate_case(pred, gt, spec, spacing=(2.0, 1.0, 1.0), convention="strict")["tumour"]
    both = metrics.evaluate_case(pred, gt, spec, spacing=(2.0, 1.0, 1.0), convention="both")["tumour"]
    assert paper["HD95"] == pytest.approx(medpy_binary.hd95(pred, gt))
    assert strict["HD95"] == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=(2.0, 1.0, 1.0)))
    assert both == {"DSC": paper["DSC"], "HD95": paper["HD95"], "HD95_strict": strict["HD95"],
                    "missed": 0.0, "spurious": 0.0}
    missed = metrics.evaluate_case(np.zeros_like(gt), gt, spec, spacing=(2.0, 1.0, 1.0), convention="both")
    diagonal = math.sqrt((5 * 2.0) ** 2 + 6 ** 2 + 7 ** 2)
    assert missed["tumour"]["HD95"] == 0.0 and missed["tumour"]["HD95_strict"] == pytest.approx(diagonal)
    assert missed["tumour"]["missed"] == 1.0 and missed["tumour"]["spurious"] == 0.0
    spurious = metrics.evaluate_case(gt, np.zeros_like(gt), spec, spacing=(2.0, 1.0, 1.0), convention="strict")
    assert spurious["tumour"]["HD95"] == pytest.approx(diagonal) and spurious["tumour"]["spurious"] == 1.0
    with pytest.raises(ValueError, match="spacing"):
        metrics.evaluate_case(pred, gt, spec, convention="strict")
    with pytest.raises(TypeError, match="float64"):
        metrics.evaluate_case(pred + 0.5, gt, spec)


def _frame(values: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """{region: {metric: per-case values}} -> per-case frame with cases c0, c1, ..."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for region, per_metric in values.items():
        for metric, vals in per_metric.items():
            for i, v in enumerate(vals):
                results.setdefault(f"c{i}", {}).setdefault(region, {})[metric] = v
    return metrics.per_case_frame(results)


def test_per_case_frame_layout() -> None:
    df = metrics.per_case_frame({"a": {"RV": {"DSC": 0.5, "HD95": 2.0}}, "b": {"RV": {"DSC": 1.0, "HD95": 0.0}}})
    assert list(df.columns) == ["case_id", "region", "metric", "value"]
    assert len(df) == 4 and list(df["case_id"]) == ["a", "a", "b", "b"]


def test_aggregate_macro_average() -> None:
    spec = get_spec("acdc")
    df = _frame({"LV": {"DSC": [0.9, 0.7]}, "RV": {"DSC": [1.0, 0.0]}, "MYO": {"DSC": [0.6, 0.6]}})
    out = metrics.aggregate(df, spec).set_index("region")
    assert list(out.index) == ["RV", "MYO", "LV", "average"]  # table order
    assert out.loc["RV", "mean"] == pytest.approx(0.5)
    assert out.loc["average", "mean"] == pytest.approx((0.5 + 0.6 + 0.8) / 3)
    assert out["n_cases"].tolist() == [2, 2, 2, 2] and out["n_nan"].sum() == 0


@pytest.mark.parametrize(
    "brats_average,expected", [("five_region", (1 + 0.5 + 0.8 + 0.2 + 0.0) / 5), ("three_region", (1 + 0.5 + 0.8) / 3)]
)
def test_aggregate_brats_average_choice(brats_average: str, expected: float) -> None:
    spec = get_spec("brats")
    df = _frame({r: {"DSC": [v]} for r, v in {"WT": 1.0, "ET": 0.5, "TC": 0.8, "ED": 0.2, "NET": 0.0}.items()})
    out = metrics.aggregate(df, spec, brats_average=brats_average).set_index("region")
    assert out.loc["average", "mean"] == pytest.approx(expected)
    assert list(out.index) == ["WT", "ET", "TC", "ED", "NET", "average"]


def test_aggregate_brats_five_region_needs_extra_regions() -> None:
    spec = get_spec("brats")
    df = _frame({r: {"DSC": [0.5]} for r in ("WT", "ET", "TC")})
    with pytest.raises(ValueError, match="ED"):
        metrics.aggregate(df, spec)
    assert metrics.aggregate(df, spec, "three_region").iloc[-1]["mean"] == pytest.approx(0.5)


def test_aggregate_strict_nanmean_and_count() -> None:
    spec = get_spec("lung")
    df = _frame({"tumour": {"DSC": [0.0, 0.8, 0.6], "HD95": [math.nan, 4.0, 2.0]}})
    out = metrics.aggregate(df, spec).set_index(["region", "metric"])
    assert out.loc[("tumour", "HD95"), "mean"] == pytest.approx(3.0)
    assert out.loc[("tumour", "HD95"), "n_nan"] == 1
    assert out.loc[("average", "HD95"), "n_nan"] == 1
    assert out.loc[("tumour", "DSC"), "mean"] == pytest.approx(14 / 30)
    wide = metrics.summary_table(metrics.aggregate(df, spec))
    assert wide.loc["DSC", "tumour"] == pytest.approx(100 * 14 / 30)
