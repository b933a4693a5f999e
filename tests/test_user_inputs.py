"""A new user's defects in "your own data" and predict/evaluate: each reproduction is one test
(tiny phantom volumes; seconds). Every bad input is one line ``sam3d CMD: error: ...``, exit 2,
and nothing is written."""
from __future__ import annotations

import json
import os
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from sam3dlib.cli import main
from sam3dlib.data.planning import PlannerSettings
from sam3dlib.data.prepare import prepare_dataset
from sam3dlib.data.splits import check_folds
from sam3dlib.data.store import PreparedDataset
from sam3dlib.data.user_dataset import UnlistedImageWarning, load_user_dataset
from sam3dlib.data.user_phantoms import write_user_phantom
from sam3dlib.evaluation.evaluator import EvaluationError, pair_cases
from sam3dlib.inference.predictor import group_inputs, uses_channel_rule
from sam3dlib.modeling.memory import decoder_state_bytes, training_bytes_per_voxel
from sam3dlib.utils.errors import UserInputError

SETTINGS = PlannerSettings(training_bytes_per_voxel, decoder_state_bytes)


def _error_line(capsys, command: str) -> str:
    """The one error line of ``sam3d command`` (progress bars left out); fails on more lines."""
    lines = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines()
             if ln.strip() and "%|" not in ln and ": warning: " not in ln]
    assert len(lines) == 1 and lines[0].startswith(f"sam3d {command}: error: "), lines
    return lines[0]


def _raw(tmp_path, layout="msd", n=3, name="raw"):
    return write_user_phantom(tmp_path / name, layout, n_cases=n)


def _touch_label(raw, case_id, fn):
    path = raw / "labelsTr" / f"{case_id}.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(fn(np.asanyarray(img.dataobj)).astype(np.uint8), img.affine), path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime even on coarse clocks


# ---------------------------------------------------------------- 1. predict never replaces its input


def _scan(path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    return path.read_bytes()


def test_predict_refuses_an_output_that_is_an_input(tmp_path, capsys):
    same = tmp_path / "same"
    same.mkdir()
    before = _scan(same / "a.nii.gz")
    for argv in (["-i", str(same), "-o", str(same)], ["-i", str(same), "-o", str(tmp_path / "." / "same")],
                 ["-i", str(same / "a.nii.gz"), "-o", str(same / "a.nii.gz")]):
        assert main(["predict", "--run", str(tmp_path / "no_run"), *argv]) == 2  # refused before the run is read
        assert "would replace the scan" in _error_line(capsys, "predict")
    assert (same / "a.nii.gz").read_bytes() == before and sorted(p.name for p in same.iterdir()) == ["a.nii.gz"]


def test_predict_messages(tmp_path, capsys):
    scan = tmp_path / "a.nii.gz"
    _scan(scan)
    assert main(["predict", "--run", str(tmp_path), "-i", str(scan), "-o", str(tmp_path / "seg.png")]) == 2
    assert "must be a .nii.gz or .nii file" in _error_line(capsys, "predict")


# ---------------------------------------------------------------- 2. prepare never uses stale data


def test_prepare_refuses_changed_raw_data_and_force_rebuilds(tmp_path, capsys):
    raw, out = _raw(tmp_path, n=3), tmp_path / "store"
    store = prepare_dataset(None, raw, out, settings=SETTINGS, progress=False)
    old_label = store.label("phantom_001").copy()
    (out / "cases" / "phantom_002.json").unlink()  # an interrupted prepare of unchanged data resumes
    assert prepare_dataset(None, raw, out, settings=SETTINGS, progress=False).case_ids == store.case_ids

    _touch_label(raw, "phantom_001", lambda a: np.where(a == 2, 1, a))  # an edited label
    assert main(["prepare", "--raw", str(raw), "--out", str(out)]) == 2
    err = _error_line(capsys, "prepare")
    assert "case phantom_001 changed" in err and "--force" in err
    assert main(["check-data", str(out)]) == 1  # the store is stale: check-data says so
    assert "changed since this store was prepared (case phantom_001 changed)" in capsys.readouterr().err
    assert np.array_equal(PreparedDataset(out).label("phantom_001"), old_label)  # untouched

    extra = write_user_phantom(tmp_path / "more", "msd", n_cases=4)  # an added case
    shutil.copy(extra / "imagesTr" / "phantom_003.nii.gz", raw / "imagesTr")
    shutil.copy(extra / "labelsTr" / "phantom_003.nii.gz", raw / "labelsTr")
    meta = json.loads((raw / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/phantom_003.nii.gz", "label": "./labelsTr/phantom_003.nii.gz"})
    (raw / "dataset.json").write_text(json.dumps(meta))
    assert main(["prepare", "--raw", str(raw), "--out", str(out)]) == 2
    err = _error_line(capsys, "prepare")
    assert "dataset.json changed" in err and "case phantom_003 added" in err

    assert main(["prepare", "--raw", str(raw), "--out", str(out), "--force"]) == 0
    rebuilt = PreparedDataset(out)
    assert "phantom_003" in rebuilt.case_ids
    assert "phantom_003" in {c for f in rebuilt.folds() for c in f["val"]}  # the new case is in a fold
    assert not np.array_equal(rebuilt.label("phantom_001"), old_label)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folder left
    (out / "feature_cache").mkdir()  # what training caches in a store does not make it foreign
    assert main(["prepare", "--raw", str(raw), "--out", str(out)]) == 0  # unchanged now: resumes


def test_prepare_refuses_a_foreign_non_empty_out_folder(tmp_path, capsys):
    raw, out = _raw(tmp_path), tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["prepare", "--raw", str(raw), "--out", str(out)]) == 2
    assert "not empty and not a prepared store" in _error_line(capsys, "prepare")
    assert main(["prepare", "--raw", str(raw), "--out", str(out), "--force"]) == 2
    _error_line(capsys, "prepare")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------- 3. folds: one validator


@pytest.mark.parametrize("folds, match", [
    ([{"train": ["a", "b"], "val": ["b", "c"]}], r"fold 0 has case\(s\) \['b'\] in both"),
    ([{"train": ["a", "b", "c"], "val": []}], "fold 0 has an empty 'val'"),
    ([{"train": [], "val": ["a"]}], "fold 0 has an empty 'train'"),
    ([{"train": ["a"], "val": ["z"]}], r"not training cases"),
    ([{"train": "a", "val": ["b"]}], "list of folds"),
])
def test_check_folds_refuses_leaks_and_empty_lists(folds, match):
    with pytest.raises(UserInputError, match=match):
        check_folds(folds, ["a", "b", "c"], "splits_final.json")
    assert check_folds([{"train": ["b", "a"], "val": ["c"]}], ["a", "b", "c"], "x") == [
        {"train": ["a", "b"], "val": ["c"]}]


@pytest.mark.parametrize("folds, match", [
    ([{"train": ["phantom_000", "phantom_001"], "val": ["phantom_001", "phantom_002"]}], "in both"),
    ([{"train": ["phantom_000", "phantom_001", "phantom_002"], "val": []}], "empty 'val'"),
])
def test_bad_splits_final_is_refused_by_prepare(folds, match, tmp_path, capsys):
    raw, out = _raw(tmp_path, "nnunet_v2"), tmp_path / "store"
    (raw / "splits_final.json").write_text(json.dumps(folds))
    assert main(["prepare", "--raw", str(raw), "--out", str(out)]) == 2
    assert re.search(match, _error_line(capsys, "prepare"))
    assert not out.exists()


# ---------------------------------------------------------------- 5. every bad input is a project error


def _one_case(tmp_path):
    return ["--raw", str(_raw(tmp_path, n=1))], "1 labelled case"


BAD_PREPARE = [
    (["--raw", "/does/not/exist"], "raw data folder not found"),
    (["--plan", "num_folds=1"], "num_folds='1': expected an integer >= 2"),
    (["--plan", "num_folds=4"], "num_folds=4 but the dataset has 3"),
    (["--plan", "patch_size=8,40,40"], "multiples of the encoder's stride"),
    (["--plan", "foo=1"], "unknown plan setting 'foo'"),
    (["--plan", "target_spacing=1,1"], "three positive numbers"),
    (["--plan", "target_spacing=0,1,1"], "three positive numbers"),
    (["--plan", "normalization=ct"], "1 scheme"),
    (["--plan", "regions=X:9"], "regions"),
    (["--plan", "batch_size=0"], "batch_size"),
    (["--plan", "memory_gb=-1"], "memory_gb"),
    (["--plan", "patch_size=abc"], "patch_size"),
    (["--plan", "memory_gb=0.000001"], "too small"),
]


@pytest.mark.parametrize("args, match", BAD_PREPARE, ids=[" ".join(a) for a, _ in BAD_PREPARE])
def test_bad_prepare_input_is_one_line(args, match, tmp_path, capsys):
    raw, out = _raw(tmp_path), tmp_path / "store"
    argv = args if "--raw" in args else ["--raw", str(raw), *args]
    assert main(["prepare", *argv, "--out", str(out)]) == 2
    assert match in _error_line(capsys, "prepare")
    assert not out.exists()


def test_too_few_cases_store_from_elsewhere_and_fold_out_of_range(tmp_path, capsys):
    one = write_user_phantom(tmp_path / "one", "msd", n_cases=1)
    assert main(["prepare", "--raw", str(one), "--out", str(tmp_path / "s1")]) == 2
    assert "1 labelled case(s)" in _error_line(capsys, "prepare") and not (tmp_path / "s1").exists()

    raw, out = _raw(tmp_path), tmp_path / "store"
    prepare_dataset(None, raw, out, settings=SETTINGS, progress=False)
    other = write_user_phantom(tmp_path / "other", "msd", n_cases=3)
    assert main(["prepare", "--raw", str(other), "--out", str(out)]) == 2
    assert "prepared from" in _error_line(capsys, "prepare")

    assert main(["train", "custom", "--data", str(out), "--out", str(tmp_path / "run"), "--fold", "7",
                 "--profile", "smoke"]) == 2
    assert "fold 7 does not exist" in _error_line(capsys, "train")


def test_train_custom_on_a_missing_store_names_prepare_raw(tmp_path, capsys):
    assert main(["train", "custom", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    assert "sam3d prepare --raw RAW" in _error_line(capsys, "train")


# ---------------------------------------------------------------- 4. check-data lists every problem


def test_check_data_goes_on_after_a_listed_but_missing_file(tmp_path, capsys):
    raw = _raw(tmp_path, n=4)
    (raw / "imagesTr" / "phantom_000.nii.gz").unlink()
    _touch_label(raw, "phantom_001", lambda a: np.where(a == 2, 7, a))
    _touch_label(raw, "phantom_002", lambda a: a[:-1])
    assert main(["check-data", str(raw)]) == 1
    err = capsys.readouterr().err
    assert "imagesTr/phantom_000.nii.gz: listed in" in err
    assert "labelsTr/phantom_001.nii.gz: unexpected label value(s) [7]" in err
    assert "labelsTr/phantom_002.nii.gz: label shape" in err and "3 problem(s)" in err


# ---------------------------------------------------------------- 6. nnU-Net v2 file names


def test_nnunet_v2_one_channel_outputs_are_named_after_the_case(tmp_path):
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    for name in ("pro_002_0000.nii.gz", "pro_003_0000.nii.gz"):
        _scan(folder / name)
    assert not uses_channel_rule({"source_layout": "msd"}, 1) and uses_channel_rule({"source_layout": "nnunet_v2"}, 1)
    assert list(group_inputs(folder, 1, channel_rule=True)) == ["pro_002", "pro_003"]
    assert list(group_inputs(folder, 1)) == ["pro_002_0000", "pro_003_0000"]  # other stores: the file's name


def test_evaluate_pairs_channel_named_predictions_only_when_unambiguous(tmp_path):
    p, g = tmp_path / "p.nii.gz", tmp_path / "g.nii.gz"
    assert pair_cases({"pro_002_0000": p}, {"pro_002": g}) == {"pro_002": (p, g)}
    with pytest.raises(EvaluationError, match="no ground truth for 1 case"):  # X and X_0000: which one?
        pair_cases({"pro_002_0000": p, "pro_002": p}, {"pro_002": g})
    with pytest.raises(EvaluationError, match="no prediction"):
        pair_cases({"pro_002_0001": p}, {"pro_002": g})


# ---------------------------------------------------------------- 7. minor


def test_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "segment 3D medical volumes" in out and "register(subparsers)" not in out


def test_float_label_values_and_unlisted_msd_images(tmp_path, capsys):
    raw = _raw(tmp_path)
    meta = json.loads((raw / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1.0": "organ", "2": "lesion"}
    (raw / "dataset.json").write_text(json.dumps(meta))
    assert load_user_dataset(raw).labels == {0: "background", 1: "organ", 2: "lesion"}
    v2 = _raw(tmp_path, "nnunet_v2", name="v2")
    meta = json.loads((v2 / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "organ": 1.0, "lesion": "2.0"}
    (v2 / "dataset.json").write_text(json.dumps(meta))
    assert load_user_dataset(v2).labels == {0: "background", 1: "organ", 2: "lesion"}
    meta["labels"]["lesion"] = 1.5
    (v2 / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match="must be integers"):
        load_user_dataset(v2)

    shutil.copy(raw / "imagesTr" / "phantom_000.nii.gz", raw / "imagesTr" / "stray.nii.gz")
    with pytest.warns(UnlistedImageWarning, match="stray.nii.gz"):
        load_user_dataset(raw)
    assert main(["prepare", "--raw", str(raw), "--out", str(tmp_path / "store")]) == 0
    err = capsys.readouterr().err
    assert err.count("sam3d prepare: warning: ") == 1 and "stray.nii.gz" in err


def test_predict_then_evaluate_one_channel_nnunet_v2_names(tmp_path, one_thread, capsys):
    """End to end: imagesTs/X_0000.nii.gz -> segs/X.nii.gz, which evaluate pairs with labelsTs/X.nii.gz."""
    raw = write_user_phantom(tmp_path / "raw", "nnunet_v2", n_cases=4, channels=("CT",))
    ts, gt = tmp_path / "imagesTs", tmp_path / "labelsTs"
    ts.mkdir()
    gt.mkdir()
    shutil.copy(raw / "imagesTr" / "phantom_003_0000.nii.gz", ts)
    shutil.copy(raw / "labelsTr" / "phantom_003.nii.gz", gt)
    store, run, segs = tmp_path / "store", tmp_path / "run", tmp_path / "segs"
    assert main(["prepare", "--raw", str(raw), "--out", str(store)]) == 0
    assert main(["train", "custom", "--data", str(store), "--out", str(run), "--profile", "smoke", "--no-progress",
                 "--no-evaluate", "--set", "epochs=1", "--set", "iterations_per_epoch=1", "--set", "val_iterations=1"]) == 0
    assert main(["predict", "--run", str(run), "-i", str(ts), "-o", str(segs), "--no-progress"]) == 0
    assert sorted(p.name for p in segs.iterdir()) == ["phantom_003.nii.gz"]
    assert "wrote 1 label map(s)" in capsys.readouterr().out
    assert main(["evaluate", str(store), "--pred", str(segs), "--gt", str(gt), "--out", str(tmp_path / "ev")]) == 0
