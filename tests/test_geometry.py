"""What goes in comes out right. NIfTI headers carried over (nibabel and SimpleITK agree),
one spacing rule, canonical orientation with the way back to the input's own grid, one label
reader, missing labels, case identity. Tiny synthetic volumes, no model (see test_predict.py for
the same through ``sam3d predict``)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, inv_ornt_aff

from sam3dlib.cli import main
from sam3dlib.data.io import DataFileError, load_label_nifti
from sam3dlib.data.preprocess import (
    argmax_resampled,
    preprocess_case,
    resample_probabilities,
    restore_label,
    save_label_nifti,
)

SHAPE = (20, 24, 10)  # x, y, z
SPACING = (0.8, 0.8, 2.5)
#: a store's dataset.json as preprocess_case needs it (MRI-like normalisation; the target spacing is the
#: scans' own, so the way back is exact: no interpolation)
META = {"target_spacing": [2.5, 0.8, 0.8], "normalization": {"scheme": "nonCT", "use_nonzero_mask": [False]},
        "num_channels": 1, "labels": {"0": "background", "1": "a", "2": "b"}}


def _volume() -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric image (x, y, z) and its label: no flip or permutation maps it onto itself."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    image = (100 + x * 3 + y * 7 + z * 11).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[3:9, 4:15, 2:5] = 1
    label[12:17, 6:10, 5:9] = 2
    return image, label


def _affine(oblique_deg: float = 0.0) -> np.ndarray:
    theta = np.deg2rad(oblique_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-SPACING[0], SPACING[1], SPACING[2]])
    aff[:3, 3] = (12.5, -30.0, 7.25)
    return aff


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def _stored_as(data: np.ndarray, affine: np.ndarray, ornt: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The same physical volume with its voxel axes permuted/flipped by ``ornt`` (matching affine)."""
    ornt = np.asarray(ornt, dtype=float)
    return np.ascontiguousarray(apply_orientation(data, ornt)), affine @ inv_ornt_aff(ornt, data.shape)


def _itk_view(path: Path) -> tuple:
    img = sitk.ReadImage(str(path))
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def _nib_view(path: Path) -> tuple:
    img = nib.load(str(path))
    h = img.header
    return (img.shape, tuple(np.round(img.affine, 5).ravel()), tuple(h.get_zooms()[:3]), int(h["qform_code"]),
            int(h["sform_code"]), tuple(np.round(h.get_qform(), 5).ravel()), h.get_xyzt_units())


def _round_trip(scan: Path, label: Path, out: Path, meta: dict = META) -> dict:
    """Preprocess like ``sam3d predict``, map the prepared label back and write it as the prediction."""
    _, lab, props = preprocess_case(scan, meta, label)
    save_label_nifti(lab, props, out, prepared=True)
    return props


# ---------------------------------------------------------------- A: header carried over


def _acdc_like(path: Path, data: np.ndarray) -> Path:
    """qform 0.8 x 0.8 x 2.5 mm (code 1), sform unit-scale diagonal (code 1): how ACDC files are stored."""
    img = nib.Nifti1Image(data, None)
    img.set_qform(np.diag([*SPACING, 1.0]), code=1)
    img.set_sform(np.eye(4), code=1)
    nib.save(img, str(path))
    return path


def _no_codes(path: Path, data: np.ndarray) -> Path:
    """Neither qform nor sform code (pixdim only)."""
    img = nib.Nifti1Image(data, None)
    img.header.set_zooms(SPACING)
    img.header["qform_code"], img.header["sform_code"] = 0, 0
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("writer", [_acdc_like, _no_codes], ids=["qform_sform_disagree", "no_codes"])
def test_output_header_is_the_inputs(tmp_path, writer):
    image, label = _volume()
    scan, lab = writer(tmp_path / "scan.nii.gz", image), writer(tmp_path / "lab.nii.gz", label)
    props = _round_trip(scan, lab, tmp_path / "pred.nii.gz")
    # nibabel and SimpleITK each read the same geometry for the scan and for the mask
    assert _nib_view(tmp_path / "pred.nii.gz") == _nib_view(scan)
    assert _itk_view(tmp_path / "pred.nii.gz") == _itk_view(scan)
    # the spacing used for resampling is pixdim, recorded with its rule
    assert props["original_spacing"] == [2.5, 0.8, 0.8] and "pixdim" in props["spacing_source"]
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "pred.nii.gz").dataobj), label)


# ---------------------------------------------------------------- D: orientation

STORAGE_ORDERS = {
    "as_is": [[0, 1], [1, 1], [2, 1]],
    "x_z_y": [[0, 1], [2, 1], [1, 1]],
    "z_y_x_flipped": [[2, -1], [1, 1], [0, -1]],
    "y_x_z_flip_y": [[1, 1], [0, -1], [2, 1]],
}


@pytest.mark.parametrize("oblique", [0.0, 20.0], ids=["axis_aligned", "oblique_20deg"])
def test_storage_order_does_not_change_the_prepared_case(tmp_path, oblique):
    """The same physical scan stored in any voxel order gives the same prepared array (hence the same
    prediction), and the mask written back lies on each input's own grid."""
    image, label = _volume()
    meta = {**META, "orientation": "LAS"}
    resampled = {**meta, "target_spacing": [2.0, 1.1, 0.9]}  # anisotropic resampling along fixed axes
    prepared = {}
    for name, ornt in STORAGE_ORDERS.items():
        img, aff = _stored_as(image, _affine(oblique), ornt)
        lab, _ = _stored_as(label, _affine(oblique), ornt)
        scan, lab_path = _save(tmp_path / f"{name}.nii.gz", img, aff), _save(tmp_path / f"{name}_l.nii.gz", lab, aff)
        prepared[name] = preprocess_case(scan, resampled, lab_path)[:2]
        _, plab, props = preprocess_case(scan, meta, lab_path)
        assert props["orientation"] == "LAS"
        out = save_label_nifti(plab, props, tmp_path / f"{name}_pred.nii.gz", prepared=True)
        back = nib.load(out)
        np.testing.assert_allclose(back.affine, aff, atol=1e-5)
        assert back.shape == lab.shape
        np.testing.assert_array_equal(np.asanyarray(back.dataobj), lab, err_msg=name)
    ref_img, ref_lab = prepared["as_is"]
    for name, (arr, plab) in prepared.items():
        np.testing.assert_array_equal(arr, ref_img, err_msg=name)
        np.testing.assert_array_equal(plab, ref_lab, err_msg=name)


def test_prepare_records_the_canonical_orientation(tmp_path):
    from sam3dlib.data.phantoms import write_phantom
    from sam3dlib.data.prepare import prepare_dataset

    raw = write_phantom("lung", tmp_path / "raw", n_cases=3, size="tiny")
    # store one case with its axes in another order (physically the same scan)
    img_path = sorted((raw / "imagesTr").glob("*.nii.gz"))[1]
    lab_path = raw / "labelsTr" / img_path.name
    for p in (img_path, lab_path):
        src = nib.load(str(p))
        data, aff = _stored_as(np.asanyarray(src.dataobj), src.affine, STORAGE_ORDERS["x_z_y"])
        _save(p, data, aff)
    store = prepare_dataset("lung", raw, tmp_path / "store")
    assert store.meta["orientation"] == "LAS"  # the phantoms' (x flipped), what most cases have
    props = store.properties(img_path.name[: -len(".nii.gz")])
    assert props["original_orientation"] == "LSA" and props["orientation"] == "LAS"
    back = restore_label(np.asarray(store.label(props["case_id"])), props)
    np.testing.assert_array_equal(back, np.asanyarray(nib.load(str(lab_path)).dataobj))


# ---------------------------------------------------------------- B: one label reader


def test_label_reader_tolerance_and_offending_values(tmp_path):
    _, label = _volume()
    near = label.astype(np.float32) + np.float32(4e-4)  # float-stored, within the tolerance
    assert np.array_equal(load_label_nifti(_save(tmp_path / "near.nii.gz", near, _affine()), [0, 1, 2]).data, label)
    bad = label.astype(np.float32)
    bad[bad == 2] = 10.6
    with pytest.raises(DataFileError, match=r"bad.nii.gz: 1 non-integer label value\(s\).*10\.6"):
        load_label_nifti(_save(tmp_path / "bad.nii.gz", bad, _affine()))
    with pytest.raises(DataFileError, match=r"outside.nii.gz: unexpected label value\(s\) \[2\]"):
        load_label_nifti(_save(tmp_path / "outside.nii.gz", label, _affine()), [0, 1])


@pytest.fixture
def synapse_raw(tmp_path) -> Path:
    from sam3dlib.data.phantoms import write_phantom

    return write_phantom("synapse", tmp_path / "raw", n_cases=4, size="tiny")


def test_prepare_and_check_data_refuse_a_non_integer_organ(synapse_raw, tmp_path, capsys):
    """An organ stored as 10.6 instead of 10: prepare exited 0 and stored it as label 11."""
    path = synapse_raw / "label" / "label0001.nii.gz"
    src = nib.load(str(path))
    data = np.asanyarray(src.dataobj).astype(np.float32)
    data[data == 6] = 10.6  # liver -> 10.6
    _save(path, data, src.affine)
    assert main(["check-data", "synapse", str(synapse_raw)]) == 1
    assert main(["prepare", "synapse", "--raw", str(synapse_raw), "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.count("label0001.nii.gz: 1 non-integer label value(s) (tolerance 0.001): 10.6") == 2, err
    assert not (tmp_path / "store" / "cases" / "img0001.json").exists()


# ---------------------------------------------------------------- C: missing labels


def test_missing_split_labels_are_errors_unless_allowed(synapse_raw, tmp_path, capsys):
    phantom = json.loads((synapse_raw / "PHANTOM.json").read_text())
    from sam3dlib.data.splits import labelled_split_of

    roles = labelled_split_of("synapse", phantom["case_ids"])
    train_case = next(c for c, r in roles.items() if r == "train")
    test_case = next(c for c, r in roles.items() if r == "test")
    for case in (train_case, test_case):
        (synapse_raw / "label" / f"{case.replace('img', 'label')}.nii.gz").unlink()
    store = tmp_path / "store"
    assert main(["prepare", "synapse", "--raw", str(synapse_raw), "--out", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"{train_case} (train)" in err and f"{test_case} (test)" in err
    assert not store.exists()
    assert main(["check-data", "synapse", str(synapse_raw)]) == 1
    err = capsys.readouterr().err
    assert "label file missing (a train case of the split)" in err and "(a test case of the split)" in err
    assert main(["prepare", "synapse", "--raw", str(synapse_raw), "--out", str(store), "--allow-missing-labels"]) == 0
    meta = json.loads((store / "dataset.json").read_text())
    assert meta["unlabelled_split_cases"] == {train_case: "train", test_case: "test"}


def test_deleted_store_label_stops_training_naming_case_and_split(tmp_path):
    from _fixtures_train import tiny_config

    from sam3dlib.data.check import check_dataset
    from sam3dlib.data.phantoms import write_phantom
    from sam3dlib.data.prepare import prepare_dataset
    from sam3dlib.data.store import MissingLabelError, PreparedDataset, case_paths
    from sam3dlib.training import train

    raw = write_phantom("synapse", tmp_path / "raw", n_cases=4, size="tiny")
    store = PreparedDataset(prepare_dataset("synapse", raw, tmp_path / "store").root)
    split = store.split("paper")
    case_paths(store.root, split.train[0])["label"].unlink()
    problems = [str(p) for p in check_dataset("synapse", store.root)]
    assert any(f"label missing for {split.train[0]}, a train case" in p for p in problems), problems
    with pytest.raises(MissingLabelError, match=rf"1 train case\(s\) of the split have no label: {split.train[0]}"):
        train(tiny_config(), store.root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- export memory


def test_argmax_resampled_equals_full_argmax():
    rng = np.random.default_rng(0)
    scores = rng.random((5, 6, 7, 8)).astype(np.float32)
    scores[2, :, :3] = scores[1, :, :3]  # ties go to the lower class, as np.argmax
    for axis in (None, 0):
        full = np.argmax(resample_probabilities(scores, (9, 11, 5), axis), axis=0)
        np.testing.assert_array_equal(argmax_resampled(scores, (9, 11, 5), axis), full)
