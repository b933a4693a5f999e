"""The layout checker catches each corrupted variant with a message naming the file."""
from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from sam3dlib.cli import main
from sam3dlib.data.check import check_dataset
from sam3dlib.data.phantoms import write_phantom
from sam3dlib.data.prepare import prepare_dataset

CASE = "lung_004"


@pytest.fixture(scope="module")
def clean_raw(tmp_path_factory):
    return write_phantom("lung", tmp_path_factory.mktemp("lung") / "raw", n_cases=3, size="tiny")


def _truncate(root):
    p = root / "imagesTr" / f"{CASE}.nii.gz"
    p.write_bytes(p.read_bytes()[: 300])
    return p


def _shape_mismatch(root):
    p = root / "labelsTr" / f"{CASE}.nii.gz"
    img = nib.load(p)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), p)
    return p


def _label_out_of_range(root):
    p = root / "labelsTr" / f"{CASE}.nii.gz"
    img = nib.load(p)
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(arr, img.affine), p)
    return p


def _nan(root):
    p = root / "imagesTr" / f"{CASE}.nii.gz"
    img = nib.load(p)
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), p)
    return p


def _missing(root):
    (root / "imagesTr" / f"{CASE}.nii.gz").unlink()
    return root / "imagesTr" / f"{CASE}.nii.gz"


def _affine(root):
    p = root / "labelsTr" / f"{CASE}.nii.gz"
    img = nib.load(p)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine + np.diag([0, 0, 0.5, 0])), p)
    return p


@pytest.mark.parametrize("corrupt,words", [
    (_truncate, "cannot read"), (_shape_mismatch, "shape"), (_label_out_of_range, "unexpected label value(s) [5]"),
    (_nan, "NaN"), (_missing, "missing"), (_affine, "affine"),
])
def test_checker_catches(clean_raw, tmp_path, corrupt, words):
    root = tmp_path / "raw"
    shutil.copytree(clean_raw, root)
    bad_file = corrupt(root)
    problems = check_dataset("lung", root)
    assert problems, corrupt.__name__
    assert any(bad_file.name in str(p) and words in p.message for p in problems), [str(p) for p in problems]


def test_clean_data_has_no_problems(clean_raw, tmp_path):
    assert check_dataset("lung", clean_raw) == []
    store = prepare_dataset("lung", clean_raw, tmp_path / "store")
    assert check_dataset("lung", store.root) == []


def test_missing_split_cases_without_marker(clean_raw, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(clean_raw, root)
    (root / "PHANTOM.json").unlink()  # now all 63 split cases are expected
    problems = check_dataset("lung", root)
    assert len(problems) == 63 - 3 and all("not found" in p.message for p in problems)
    assert check_dataset("lung", root, expect_all=False) == []


def test_wrong_channel_count_and_cli(tmp_path, capsys):
    raw = write_phantom("lung", tmp_path / "lung", n_cases=2, size="tiny")
    assert main(["check-data", "lung", str(raw)]) == 0
    rc = main(["check-data", "brats", str(raw), "--no-missing"])  # 1-channel CT checked as 4-channel BraTS
    err = capsys.readouterr().err
    assert rc == 1 and "1 modality channel(s), brats needs 4" in err and "lung_004.nii.gz" in err
