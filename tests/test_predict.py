"""Prediction with a trained run: geometry of the output, folder mode, and agreement with
the evaluation inside ``run_experiment`` (``sam3d predict`` + ``sam3d evaluate``)."""
from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from sam3dlib.cli import main
from sam3dlib.data.store import PreparedDataset
from sam3dlib.inference.predictor import RunError, load_run, predict_file


def _test_cases(store: PreparedDataset) -> list[str]:
    return list(store.split("paper").test)


def test_predict_keeps_input_affine_and_shape(smoke_run, synapse_store, tmp_path):
    store = PreparedDataset(synapse_store)
    src = store.properties(_test_cases(store)[0])["image_files"][0]
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", src, "-o", str(out), "--device", "cpu"]) == 0
    inp, pred = nib.load(src), nib.load(out)
    assert pred.shape == inp.shape
    np.testing.assert_allclose(pred.affine, inp.affine, atol=1e-5)
    data = np.asanyarray(pred.dataobj)
    assert data.dtype == np.uint8 and data.max() < 14


def test_predict_evaluate_equals_run_metrics(smoke_run, synapse_store, tmp_path):
    """Standalone predict + evaluate give the metrics written by run_experiment, exactly."""
    store = PreparedDataset(synapse_store)
    images, gts = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gts.mkdir()
    for case in _test_cases(store):
        props = store.properties(case)
        shutil.copy(props["image_files"][0], images / f"{case}.nii.gz")
        shutil.copy(props["label_file"], gts / f"{case}.nii.gz")
    preds, scores = tmp_path / "pred", tmp_path / "scores"
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(images), "-o", str(preds),
                 "--device", "cpu", "--no-progress"]) == 0
    assert main(["evaluate", "synapse", "--pred", str(preds), "--gt", str(gts), "--out", str(scores)]) == 0
    key = ["case_id", "region", "metric"]
    ours = pd.read_csv(smoke_run["run"] / "per_case.csv").sort_values(key).reset_index(drop=True)
    theirs = pd.read_csv(scores / "per_case.csv").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, theirs)
    for case in _test_cases(store):  # the very same label maps
        a = np.asanyarray(nib.load(preds / f"{case}.nii.gz").dataobj)
        b = np.asanyarray(nib.load(smoke_run["run"] / "predictions" / f"{case}.nii.gz").dataobj)
        np.testing.assert_array_equal(a, b)


def test_load_run_errors(tmp_path, smoke_run):
    with pytest.raises(RunError, match="not a finished sam3dlib training run"):
        load_run(tmp_path)
    model, config, meta = load_run(smoke_run["run"], "cpu")
    assert config.encoder == "vit_tiny" and meta["dataset"] == "synapse" and not model.training
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict_file(smoke_run["run"], tmp_path / "missing.nii.gz", tmp_path / "o.nii.gz", device="cpu")


def test_cli_predict_rejects_folder_to_file(smoke_run, tmp_path):
    (tmp_path / "in").mkdir()
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(tmp_path / "in"), "-o",
                 str(tmp_path / "x.nii.gz")]) == 2


# ---------------------------------------------------------------- case identity, geometry


def _copy_test_scan(store: PreparedDataset, folder, name: str) -> str:
    src = store.properties(_test_cases(store)[0])["image_files"][0]
    folder.mkdir(exist_ok=True)
    shutil.copy(src, folder / name)
    return src


def test_predict_folder_one_output_per_input_for_a_one_channel_model(smoke_run, synapse_store, tmp_path):
    """``scan_0001``, ``scan_0002`` were taken as two channels of case ``scan`` (exit 2, a temporary output
    left behind) and ``liver_0007`` was written as ``liver.nii.gz``."""
    store = PreparedDataset(synapse_store)
    for name in ("scan_0001.nii.gz", "scan_0002.nii.gz", "liver_0007.nii.gz"):
        _copy_test_scan(store, tmp_path / "in", name)
    out = tmp_path / "out"
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(tmp_path / "in"), "-o", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["liver_0007.nii.gz", "scan_0001.nii.gz", "scan_0002.nii.gz"]


def test_group_inputs_channel_rule_only_for_multichannel_models(tmp_path):
    from sam3dlib.inference.predictor import group_inputs

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    (tmp_path / "in").mkdir()
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0002.nii.gz"):
        nib.save(img, str(tmp_path / "in" / name))
    assert list(group_inputs(tmp_path / "in", 1)) == ["a_0000", "a_0001", "b_0000", "b_0002"]
    with pytest.raises(ValueError, match=r"takes 2 channel\(s\).*case b: missing b_0001, extra b_0002\.nii\.gz"):
        group_inputs(tmp_path / "in", 2)
    (tmp_path / "in" / "b_0002.nii.gz").rename(tmp_path / "in" / "b_0001.nii.gz")
    assert group_inputs(tmp_path / "in", 2) == {
        "a": [tmp_path / "in" / "a_0000.nii.gz", tmp_path / "in" / "a_0001.nii.gz"],
        "b": [tmp_path / "in" / "b_0000.nii.gz", tmp_path / "in" / "b_0001.nii.gz"]}


def test_predict_folder_failure_leaves_nothing(smoke_run, synapse_store, tmp_path, capsys):
    store = PreparedDataset(synapse_store)
    _copy_test_scan(store, tmp_path / "in", "good.nii.gz")
    four_d = nib.Nifti1Image(np.zeros((6, 6, 6, 2), np.float32), np.eye(4))
    nib.save(four_d, str(tmp_path / "in" / "two_channels.nii.gz"))
    out = tmp_path / "out"
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(tmp_path / "in"), "-o", str(out),
                 "--device", "cpu", "--no-progress"]) == 2
    assert "case two_channels (two_channels.nii.gz) holds 2 channel(s)" in capsys.readouterr().err
    assert not out.exists()


def test_same_scan_in_another_storage_order_gives_the_same_physical_mask(smoke_run, synapse_store, tmp_path):
    """Axes stored as x, z, y (matching affine) predicted a liver DSC of 0.05 instead of 0.91."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff

    store = PreparedDataset(synapse_store)
    src = nib.load(_copy_test_scan(store, tmp_path / "in", "as_is.nii.gz"))
    ornt = np.array([[0, 1], [2, -1], [1, 1]], dtype=float)  # x, z (reversed), y
    data = np.ascontiguousarray(apply_orientation(np.asanyarray(src.dataobj), ornt))
    nib.save(nib.Nifti1Image(data, src.affine @ inv_ornt_aff(ornt, src.shape)), str(tmp_path / "in" / "xzy.nii.gz"))
    out = tmp_path / "out"
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(tmp_path / "in"), "-o", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    a, b = nib.load(out / "as_is.nii.gz"), nib.load(out / "xzy.nii.gz")
    np.testing.assert_allclose(b.affine, src.affine @ inv_ornt_aff(ornt, src.shape), atol=1e-5)
    mask_a = np.asanyarray(a.dataobj)
    assert mask_a.any()
    np.testing.assert_array_equal(apply_orientation(mask_a, ornt), np.asanyarray(b.dataobj))


def test_predict_output_carries_an_acdc_style_header(smoke_run, synapse_store, tmp_path):
    """Through ``sam3d predict``: qform 0.8 x 0.8 x 2.5 mm, sform unit scale (as ACDC)."""
    import SimpleITK as sitk

    store = PreparedDataset(synapse_store)
    src = nib.load(store.properties(_test_cases(store)[0])["image_files"][0])
    img = nib.Nifti1Image(np.asanyarray(src.dataobj), None)
    img.set_qform(np.diag([0.8, 0.8, 2.5, 1.0]), code=1)
    img.set_sform(np.eye(4), code=1)
    nib.save(img, str(tmp_path / "acdc_like.nii.gz"))
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(tmp_path / "acdc_like.nii.gz"), "-o", str(out),
                 "--device", "cpu"]) == 0
    i, o = sitk.ReadImage(str(tmp_path / "acdc_like.nii.gz")), sitk.ReadImage(str(out))
    assert (o.GetSize(), o.GetSpacing(), o.GetOrigin(), o.GetDirection()) == \
        (i.GetSize(), i.GetSpacing(), i.GetOrigin(), i.GetDirection())
    hi, ho = nib.load(tmp_path / "acdc_like.nii.gz").header, nib.load(out).header
    for field in ("pixdim", "qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "quatern_b", "qoffset_x"):
        np.testing.assert_array_equal(ho[field], hi[field], err_msg=field)


def test_test_case_without_label_is_not_silently_left_out(smoke_run, synapse_store, tmp_path):
    """A deleted test label made the summary score 1 of 2 cases, silently."""
    from _fixtures_train import copy_store

    from sam3dlib.data.store import MissingLabelError, case_paths
    from sam3dlib.pipeline import evaluate_run

    store = PreparedDataset(copy_store(synapse_store, tmp_path / "store"))
    dropped = _test_cases(store)[0]
    case_paths(store.root, dropped)["label"].unlink()
    run = tmp_path / "run"
    shutil.copytree(smoke_run["run"], run)
    with pytest.raises(MissingLabelError, match=rf"1 test case\(s\) of the split have no label: {dropped}"):
        evaluate_run(run, store.root, device="cpu", progress=False)
