"""The authors' prediction maps scored by case id, and their dice_pre.txt compared case by case."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from _authors_formats import write_dice_pre

from sam3dlib.data.specs import get_spec
from sam3dlib.evaluation.authors_scores import (
    AUTHORS_CLASSES,
    ScoreFileError,
    read_authors_scores,
    score_released_predictions,
)
from sam3dlib.evaluation.metrics import evaluate_case

CASES = ["img0001", "img0002", "img0003", "img0004", "img0005"]
THEIR_NAME = {v: k for k, v in AUTHORS_CLASSES["synapse"].items()}


def _label(rng, shift=0):
    a = np.zeros((12, 26, 26), np.uint8)
    for value, (z, y, x) in zip((1, 2, 3, 6, 8), ((2, 3, 3), (5, 10, 4), (5, 4, 12), (7, 12, 12), (3, 14, 6))):
        r = rng.integers(2, 4)
        a[z:z + 3, y + shift:y + shift + r, x:x + r + 1] = value
    return a


def _save(a, path):
    nib.save(nib.Nifti1Image(a, np.diag([0.8, 0.8, 3.0, 1.0])), path)


@pytest.fixture
def released(tmp_path):
    """labelsTs/ (label000N) and the authors' prediction folder (img000N, a case missing), with the
    dice_pre.txt their script writes by pairing the sorted lists position by position."""
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "labelsTs", tmp_path / "inferTs"
    gt_dir.mkdir(), pred_dir.mkdir()
    gts, preds = {}, {}
    for c in CASES:
        gts[c] = _label(rng, shift=CASES.index(c))  # every case's labels elsewhere
        _save(gts[c], gt_dir / f"{c.replace('img', 'label')}.nii.gz")
        preds[c] = _label(np.random.default_rng(CASES.index(c)), shift=CASES.index(c) + 1)
    for c in CASES:
        if c != "img0003":  # their folder lacks one case
            _save(preds[c], pred_dir / f"{c}.nii.gz")
    spec = get_spec("synapse")
    rows = []
    sorted_preds = [c for c in CASES if c != "img0003"]
    for g, p in zip(CASES, sorted_preds):  # their zip(sorted labels, sorted predictions)
        scores = evaluate_case(preds[p], gts[g], spec)
        block = {f"Dice_{THEIR_NAME[r]}": s["DSC"] for r, s in scores.items()}
        block.update({f"hd_{THEIR_NAME[r]}": s["HD95"] for r, s in scores.items()})
        rows.append((f"{p}.nii.gz", block))
    write_dice_pre(pred_dir / "dice_pre.txt", rows, "synapse")
    return gt_dir, pred_dir


def test_shifted_dice_pre_caught_and_named(released):
    gt_dir, pred_dir = released
    res = score_released_predictions("synapse", pred_dir, gt_dir)
    assert res.missing == ["img0003"] and res.extra == []
    assert sorted(res.per_case["case_id"].unique()) == ["img0001", "img0002", "img0004", "img0005"]
    d = res.disagreements
    assert set(d["case_id"]) == {"img0004", "img0005"}  # paired with img0003's and img0004's labels by them
    assert (d["difference"].abs() > 1e-3).all() and set(d["metric"]) <= {"DSC", "HD95"}
    text = res.describe()
    assert "no prediction for 1 case(s): img0003" in text
    assert "disagreement(s) > 0.001 in 2 case(s): img0004, img0005" in text


def test_dice_pre_of_the_right_pairs_agrees(released, tmp_path):
    gt_dir, pred_dir = released
    spec = get_spec("synapse")
    rows = []
    for c in ["img0001", "img0002", "img0004", "img0005"]:
        p = np.asarray(nib.load(pred_dir / f"{c}.nii.gz").dataobj).astype(np.uint8)
        g = np.asarray(nib.load(gt_dir / f"{c.replace('img', 'label')}.nii.gz").dataobj).astype(np.uint8)
        s = evaluate_case(p, g, spec)
        rows.append((f"{c}.nii.gz", {**{f"Dice_{THEIR_NAME[r]}": v["DSC"] for r, v in s.items()},
                                      **{f"hd_{THEIR_NAME[r]}": v["HD95"] for r, v in s.items()}}))
    good = write_dice_pre(tmp_path / "dice_pre.txt", rows, "synapse")
    res = score_released_predictions("synapse", pred_dir, gt_dir, score_file=good)
    assert res.disagreements.empty, res.disagreements
    assert "every score agrees" in res.describe()


def test_appended_runs_read_last_and_bad_class_refused(tmp_path):
    f = tmp_path / "dice_pre.txt"
    write_dice_pre(f, [("img0001.nii.gz", {"Dice_spleen": 0.1, "hd_spleen": 3.0})], "synapse")
    first = f.read_text()
    write_dice_pre(f, [("img0001.nii.gz", {"Dice_spleen": 0.9, "hd_spleen": 2.0})], "synapse")
    f.write_text(first + f.read_text())
    got = read_authors_scores(f, "synapse")
    assert got.set_index("metric")["value"].to_dict() == {"DSC": 0.9, "HD95": 2.0}
    assert got["region"].tolist() == ["Spl", "Spl"] and got["case_id"].tolist() == ["img0001"] * 2
    write_dice_pre(f, [("img0001.nii.gz", {"Dice_kidney": 0.1})], "synapse")
    with pytest.raises(ScoreFileError, match="class 'kidney' is not one of synapse's"):
        read_authors_scores(f, "synapse")
    f.write_text("nothing here\n")
    with pytest.raises(ScoreFileError, match="no per-case block"):
        read_authors_scores(f, "synapse")
