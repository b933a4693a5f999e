"""`sam3d evaluate` on a tiny folder of NIfTI files written here."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from medpy.metric import binary as medpy_binary

from sam3dlib.cli import evaluate as cli_evaluate
from sam3dlib.cli import main
from sam3dlib.evaluation.evaluator import case_id_from_filename
from sam3dlib.utils.errors import UserInputError

SPACING = (0.8, 0.8, 2.5)  # NIfTI (x, y, z)


def _write(path: Path, label: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(label.astype(np.uint8), np.diag([*SPACING, 1.0])), str(path))


def _acdc_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = np.zeros((12, 12, 5), np.uint8)
    gt[2:6, 2:8, 1:4], gt[6:10, 3:9, 1:4], gt[4:8, 8:11, 0:3] = 1, 2, 3
    pred = gt.copy()
    pred[rng.random(gt.shape) < 0.1] = rng.integers(0, 4)
    return pred, gt


def _folders(tmp_path: Path, n: int = 3) -> tuple[Path, Path, dict]:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    cases = {}
    for i in range(n):
        case_id = f"patient{i + 1:03d}_frame01"
        pred, gt = _acdc_case(i)
        _write(pred_dir / f"{case_id}.nii.gz", pred)
        _write(gt_dir / f"{case_id}_gt.nii.gz", gt)
        cases[case_id] = (pred, gt)
    (pred_dir / "summary.json").write_text("{}")  # non-NIfTI files are ignored
    return pred_dir, gt_dir, cases


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sam3d")
    cli_evaluate.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize(
    "name,case_id",
    [
        ("label0001.nii.gz", "img0001"),
        ("img0001.nii.gz", "img0001"),
        ("patient001_frame01_gt.nii.gz", "patient001_frame01"),
        ("BRATS_001.nii.gz", "BRATS_001"),
        ("lung_001.nii", "lung_001"),
    ],
)
def test_case_id_from_filename(name: str, case_id: str) -> None:
    assert case_id_from_filename(name) == case_id


def test_evaluate_writes_per_case_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred_dir, gt_dir, cases = _folders(tmp_path)
    out = tmp_path / "out"
    assert _run(["evaluate", "acdc", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out)]) == 0
    per_case = pd.read_csv(out / "per_case.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert list(per_case.columns) == ["case_id", "region", "metric", "value"]
    assert sorted(per_case["case_id"].unique()) == sorted(cases)
    pred, gt = cases["patient002_frame01"]
    row = per_case.set_index(["case_id", "region", "metric"])["value"]
    assert row[("patient002_frame01", "MYO", "HD95")] == pytest.approx(medpy_binary.hd95(pred == 2, gt == 2))
    assert row[("patient002_frame01", "LV", "DSC")] == pytest.approx(medpy_binary.dc(pred == 3, gt == 3))
    means = summary.set_index(["region", "metric"])["mean"]
    dsc = [per_case[(per_case.region == r) & (per_case.metric == "DSC")]["value"].mean() for r in ("RV", "MYO", "LV")]
    assert means[("average", "DSC")] == pytest.approx(np.mean(dsc))
    printed = capsys.readouterr().out
    assert "RV" in printed and "average" in printed and "HD95 in voxels" in printed


def test_evaluate_strict_uses_gt_spacing_and_counts_nan(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred_dir, gt_dir, cases = _folders(tmp_path, n=2)
    pred, gt = cases["patient001_frame01"]
    empty_rv = np.where(pred == 1, 0, pred)
    _write(pred_dir / "patient001_frame01.nii.gz", empty_rv)  # RV missed in one case
    out = tmp_path / "out"
    argv = ["evaluate", "acdc", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out), "--convention", "both"]
    assert _run(argv) == 0
    row = pd.read_csv(out / "per_case.csv").set_index(["case_id", "region", "metric"])["value"]
    assert row[("patient001_frame01", "RV", "HD95")] == 0.0  # the authors' convention, as they defined it
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(gt.shape, SPACING)))
    assert row[("patient001_frame01", "RV", "HD95_strict")] == pytest.approx(diagonal)  # a miss is a failure
    assert row[("patient001_frame01", "RV", "missed")] == 1.0
    assert row[("patient001_frame01", "LV", "HD95_strict")] == pytest.approx(
        medpy_binary.hd95(pred == 3, gt == 3, voxelspacing=SPACING)
    )
    summary = pd.read_csv(out / "summary.csv").set_index(["region", "metric"])
    assert summary.loc[("RV", "HD95_strict"), "n_nan"] == 0
    assert summary.loc[("RV", "missed"), "mean"] == 0.5
    assert "RV: missed in 1 of 2 cases" in capsys.readouterr().out


def test_missing_cases_are_named(tmp_path: Path) -> None:
    pred_dir, gt_dir, _ = _folders(tmp_path)
    (pred_dir / "patient002_frame01.nii.gz").unlink()
    _write(pred_dir / "patient009_frame01.nii.gz", np.zeros((12, 12, 5)))
    argv = ["evaluate", "acdc", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(tmp_path / "o")]
    with pytest.raises(UserInputError, match=r"no prediction for 1 case\(s\): patient002_frame01.*no ground truth .*patient009"):
        _run(argv)


def test_main_reports_user_error_as_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred_dir, gt_dir, _ = _folders(tmp_path, n=1)
    _write(pred_dir / "patient001_frame01.nii.gz", np.zeros((12, 12, 4)))
    code = main(["evaluate", "acdc", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "patient001_frame01" in err and "(12, 12, 4)" in err


def _flipped_copy(path: Path, out: Path) -> None:
    """The same physical label map stored with its x axis reversed (affine adjusted)."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)[::-1]
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ flip), str(out))


def test_prediction_on_another_grid_is_refused_or_resampled(tmp_path: Path) -> None:
    """A physically identical but flipped prediction was compared voxel by voxel (DSC 0.13)."""
    pred_dir, gt_dir, cases = _folders(tmp_path, n=1)
    case_id = "patient001_frame01"
    _flipped_copy(gt_dir / f"{case_id}_gt.nii.gz", pred_dir / f"{case_id}.nii.gz")  # perfect, stored flipped
    argv = ["evaluate", "acdc", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(tmp_path / "o")]
    with pytest.raises(UserInputError, match=r"(?s)not on the voxel grid.*prediction affine differs.*ground truth:"):
        _run(argv)
    assert not (tmp_path / "o" / "per_case.csv").exists()
    assert _run([*argv, "--resample-to-gt"]) == 0
    dsc = pd.read_csv(tmp_path / "o" / "per_case.csv").query("metric == 'DSC'")["value"]
    assert (dsc == 1.0).all()


def test_non_integer_label_is_refused_by_evaluate(tmp_path: Path) -> None:
    """One reader; a label map holding 2.6 is refused with the file and the value."""
    pred_dir, gt_dir, cases = _folders(tmp_path, n=1)
    pred, _ = cases["patient001_frame01"]
    bad = pred.astype(np.float32)
    bad[bad == 2] = 2.6
    nib.save(nib.Nifti1Image(bad, np.diag([*SPACING, 1.0])), str(pred_dir / "patient001_frame01.nii.gz"))
    assert main(["evaluate", "acdc", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(ValueError, match=r"patient001_frame01.nii.gz: 1 non-integer label value.*2\.6"):
        _run(["evaluate", "acdc", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(tmp_path / "o")])
