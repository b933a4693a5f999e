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
