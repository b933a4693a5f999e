"""Built-in phantoms: raw layouts, real ids and label values, geometry, determinism."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from sam3dlib.cli import main
from sam3dlib.data.phantoms import write_phantom
from sam3dlib.data.readers import detect_layout, find_raw_cases
from sam3dlib.data.splits import get_split

LAYOUT = {"synapse": "btcv", "acdc": "acdc", "brats": "msd", "lung": "msd"}
LABELS = {"synapse": {0, 1, 2, 3, 4, 6, 7, 8, 11}, "acdc": {0, 1, 2, 3}, "brats": {0, 1, 2, 3}, "lung": {0, 1}}


@pytest.fixture(scope="module", params=list(LAYOUT))
def phantom(request, tmp_path_factory):
    ds = request.param
    root = write_phantom(ds, tmp_path_factory.mktemp(ds), size="tiny")
    return ds, root


def test_layout_ids_and_labels(phantom):
    ds, root = phantom
    assert detect_layout(root) == LAYOUT[ds]
    cases = find_raw_cases(ds, root)
    ids = [c.case_id for c in cases]
    s = get_split(ds, available=ids)  # real ids: the split machinery works unchanged
    assert s.train and s.test
    for c in cases:
        lab = np.asarray(nib.load(c.label).dataobj)
        assert set(np.unique(lab).tolist()) == LABELS[ds], c.label


def test_geometry_is_non_trivial(phantom):
    ds, root = phantom
    case = find_raw_cases(ds, root)[0]
    img = nib.load(case.images[0])
    aff = img.affine
    assert aff[0, 0] < 0 and np.abs(aff[:3, 3]).sum() > 0  # flipped axis and an offset
    assert np.allclose(nib.load(case.label).affine, aff)
    if ds == "brats":
        assert img.shape[3] == 4  # 4D, modality last
    else:
        assert len(set(np.round(img.header.get_zooms()[:3], 3))) > 1  # anisotropic, non-unit


def test_deterministic_by_seed(tmp_path):
    a = write_phantom("lung", tmp_path / "a", n_cases=2, seed=3, size="tiny")
    b = write_phantom("lung", tmp_path / "b", n_cases=2, seed=3, size="tiny")
    c = write_phantom("lung", tmp_path / "c", n_cases=2, seed=4, size="tiny")
    arr = {k: np.asarray(nib.load(r / "imagesTr" / "lung_004.nii.gz").dataobj) for k, r in zip("abc", (a, b, c))}
    assert np.array_equal(arr["a"], arr["b"]) and not np.array_equal(arr["a"], arr["c"])


def test_acdc_myocardium_is_a_ring(tmp_path):
    root = write_phantom("acdc", tmp_path, n_cases=2, size="tiny")
    lab = np.asarray(nib.load(find_raw_cases("acdc", root)[0].label).dataobj)
    z = lab.shape[2] // 3
    lv = lab[:, :, z] == 3
    ring = ndimage.binary_dilation(lv) & ~lv
    assert lv.any() and np.all(np.isin(lab[:, :, z][ring], (2, 3)))


def test_brats_regions_nested(tmp_path):
    root = write_phantom("brats", tmp_path, n_cases=2, size="tiny")
    lab = np.asarray(nib.load(find_raw_cases("brats", root)[0].label).dataobj)
    tc = np.isin(lab, (2, 3))
    assert (lab == 1).sum() > tc.sum() > (lab == 2).sum() > 0
    assert np.all(np.isin(lab[ndimage.binary_dilation(lab == 2)], (2, 3)))  # core inside the enhancing rim


def test_cli_phantom(tmp_path, capsys):
    assert main(["phantom", "lung", "--out", str(tmp_path / "lung"), "--cases", "2", "--size", "tiny"]) == 0
    assert "sam3d prepare lung" in capsys.readouterr().out
    assert len(find_raw_cases("lung", tmp_path / "lung")) == 2


@pytest.mark.parametrize("kwargs,match", [({"dataset": "kidney"}, "unknown dataset"),
                                          ({"dataset": "lung", "size": "huge"}, "unknown size"),
                                          ({"dataset": "lung", "n_cases": 1}, "n_cases")])
def test_phantom_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_phantom(out=tmp_path, **kwargs)
