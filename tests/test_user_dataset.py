"""A user's own dataset: MSD and nnU-Net v2 layouts, planning against nnU-Net's rules, bad inputs,
and `sam3d prepare --raw` / `sam3d train custom` / `sam3d predict` / `sam3d evaluate` end to end."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from sam3dlib.cli import main
from sam3dlib.config import store_config
from sam3dlib.data.planning import (
    MAX_BATCH_FRACTION,
    Fingerprint,
    PlannerSettings,
    kfold_splits,
    make_plan,
    parse_plan_overrides,
    plan_batch_size,
    plan_patch_size,
)
from sam3dlib.data.plans import spec_from_meta
from sam3dlib.data.prepare import prepare_dataset
from sam3dlib.data.specs import DATASETS, DatasetSpec, get_spec
from sam3dlib.data.store import PreparedDataset
from sam3dlib.data.user_dataset import DatasetFormatError, load_user_dataset
from sam3dlib.data.user_phantoms import write_user_phantom
from sam3dlib.modeling.memory import decoder_state_bytes, training_bytes_per_voxel
from sam3dlib.study.registry import get_config

SETTINGS = PlannerSettings(training_bytes_per_voxel, decoder_state_bytes)
#: a training budget of seconds on a CPU
FAST = ["--set", "epochs=1", "--set", "iterations_per_epoch=2", "--set", "val_iterations=1"]


# ---------------------------------------------------------------- paper datasets: specs from the data file


def test_paper_specs_come_from_the_data_file_unchanged():
    """The values the paper's experiments ran with (formerly literals in specs.py)."""
    s = get_spec("synapse")
    assert list(s.regions) == ["RKid", "LKid", "Spl", "Gal", "Sto", "Pan", "Aor", "Liv"]
    assert s.regions["Spl"] == (1,) and s.patch_size == (64, 176, 176) and s.batch_size == 2 and s.batch_dice
    a = get_spec("acdc")
    assert (a.patch_size, a.paper_text_patch_size, a.batch_size, a.batch_dice) == ((16, 160, 160), (14, 160, 160), 4, False)
    b = get_spec("brats")
    assert b.regions == {"WT": (1, 2, 3), "ET": (3,), "TC": (2, 3)} and b.extra_regions == {"ED": (1,), "NET": (2,)}
    assert (b.num_channels, b.patch_size, b.modality) == (4, (64, 64, 64), "MRI")
    lung = get_spec("lung")
    assert (lung.patch_size, lung.batch_dice, lung.modality) == ((34, 192, 192), True, "CT")
    for name in DATASETS:
        spec = get_spec(name)
        assert DatasetSpec.from_dict(spec.to_dict()) == spec
        assert spec_from_meta({"dataset": name}) == spec
    assert get_config("table1_synapse", "paper").batch_dice and not get_config("table2_acdc", "paper").batch_dice


def test_spec_rejects_a_region_of_unknown_labels():
    d = get_spec("acdc").to_dict()
    d["regions"]["bad"] = [7]
    with pytest.raises(ValueError, match="region 'bad'"):
        DatasetSpec.from_dict(d)


# ---------------------------------------------------------------- planning rules (nnU-Net v1)


def test_patch_size_follows_nnunet_v1_start_and_shrinks_the_largest_axis():
    # unlimited memory: nnU-Net's initial patch (512 voxels along the coarsest axis, prop. to 1/spacing)
    # capped by the median shape; H, W rounded up to the stride
    assert plan_patch_size((40, 300, 250), (3.0, 0.75, 0.75), lambda p: 0, 1.0, 16) == (40, 304, 256)
    assert plan_patch_size((900, 900, 900), (1.0, 1.0, 1.0), lambda p: 0, 1.0, 16) == (512, 512, 512)
    # memory model = voxels: shrink the axis largest relative to the median shape (the last one on a
    # tie, as nnU-Net's argsort) by one step (D: 1, H/W: the stride) until 2 samples fit
    def plan(budget_voxels):
        return plan_patch_size((4, 64, 64), (1.0, 1.0, 1.0), lambda p: float(np.prod(p)), 2 * budget_voxels, 16)
    assert plan(4 * 64 * 64) == (4, 64, 64)
    assert plan(4 * 64 * 48) == (4, 64, 48)  # tie 1 : 1 : 1 -> W
    assert plan(4 * 48 * 48) == (4, 48, 48)  # 1 : 1 : 0.75 -> H
    assert plan(3 * 48 * 48) == (3, 48, 48)  # 1 : 0.75 : 0.75 -> D
    with pytest.raises(ValueError, match="too small"):
        plan_patch_size((10, 64, 64), (1.0, 1.0, 1.0), lambda p: 1e9, 1.0, 16)


def test_batch_size_fills_the_budget_within_nnunet_bounds():
    patch = (16, 64, 64)
    vox = float(np.prod(patch))
    assert plan_batch_size(patch, 100.0, 1000.0, 1e12) == 10  # what fits
    assert plan_batch_size(patch, 100.0, 1000.0, 4 * vox / MAX_BATCH_FRACTION) == 4  # 5 % of the dataset
    assert plan_batch_size(patch, 100.0, 1000.0, vox) == 2  # never below nnU-Net's minimum of 2 ...
    assert plan_batch_size(patch, 100.0, 150.0, 1e12) == 1  # ... unless only one sample fits


def test_kfold_splits_are_seeded_disjoint_and_cover_every_case():
    ids = [f"c{i}" for i in range(12)]
    folds = kfold_splits(ids)
    assert folds == kfold_splits(list(reversed(ids))) and len(folds) == 5
    assert sorted(c for f in folds for c in f["val"]) == sorted(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and sorted(f["train"] + f["val"]) == sorted(ids)
    assert len(kfold_splits(ids[:3])) == 3
    with pytest.raises(ValueError):
        kfold_splits(ids[:1])


def _fingerprint(n=4, spacing=(3.0, 0.8, 0.8), shape=(20, 100, 120), crop=None) -> Fingerprint:
    crop = crop or shape
    return Fingerprint([f"c{i}" for i in range(n)], np.array([spacing] * n), np.array([shape] * n, float),
                       np.array([crop] * n, float), {0: np.arange(1000, dtype=np.float32)}, np.array([900, 90, 10]))


def test_plan_normalisation_per_channel_and_overrides():
    labels = {0: "background", 1: "organ", 2: "lesion"}
    meta = make_plan("x", ("CT", "T2"), labels, _fingerprint(), SETTINGS)
    ct, t2 = meta["normalization"]["channels"]
    assert ct["scheme"] == "CT" and ct["percentile_00_5"] == pytest.approx(np.percentile(np.arange(1000), 0.5))
    assert ct["mean"] == pytest.approx(499.5) and t2 == {"scheme": "nonCT", "use_nonzero_mask": False}
    # cropping to the nonzero box shrinks the median case by > 25 %: z-score inside the mask (nnU-Net)
    masked = make_plan("x", ("T2",), labels, _fingerprint(crop=(20, 50, 60)), SETTINGS)
    assert masked["normalization"]["channels"][0]["use_nonzero_mask"] is True
    spec = spec_from_meta(meta)
    assert spec.regions == {"organ": (1,), "lesion": (2,)} and spec.num_channels == 2 and spec.num_classes == 3
    assert spec.patch_size[1] % 16 == 0 and spec.patch_size[0] == 20
    ov = parse_plan_overrides(["patch_size=8,32,48", "batch_size=3", "target_spacing=2,1,1", "regions=all:1,2",
                               "normalization=zscore,zscore_nonzero"])
    m2 = make_plan("x", ("CT", "T2"), labels, _fingerprint(), SETTINGS, ov)
    s2 = spec_from_meta(m2)
    assert (s2.patch_size, s2.batch_size, s2.target_spacing) == ((8, 32, 48), 3, (2.0, 1.0, 1.0))
    assert s2.regions["all"] == (1, 2) and m2["normalization"]["channels"][0]["scheme"] == "nonCT"
    assert m2["planning"]["sources"]["patch_size"] == "override"
    # a region of one label renames that label's region: one column per scored region, in label order
    m3 = make_plan("x", ("T2",), labels, _fingerprint(), SETTINGS, {"regions": {"L": [2], "all": [1, 2]}})
    assert spec_from_meta(m3).regions == {"organ": (1,), "L": (2,), "all": (1, 2)}
    with pytest.raises(ValueError, match="multiples"):
        make_plan("x", ("CT",), labels, _fingerprint(), SETTINGS, {"patch_size": [8, 30, 32]})
    with pytest.raises(ValueError, match="unknown plan setting"):
        parse_plan_overrides(["crop=1,2,3"])


def test_smaller_budget_gives_a_smaller_plan():
    labels = {0: "background", 1: "organ"}
    fp = _fingerprint(shape=(60, 256, 256))
    big = spec_from_meta(make_plan("x", ("MRI",), labels, fp, SETTINGS))
    small = spec_from_meta(make_plan("x", ("MRI",), labels, fp, SETTINGS, {"memory_gb": 0.25}))
    assert np.prod(small.patch_size) < np.prod(big.patch_size)
    assert training_bytes_per_voxel(1, 2) * np.prod(small.patch_size) * 2 <= 0.25 * 2**30


# ---------------------------------------------------------------- the two layouts end to end


@pytest.mark.parametrize("layout", ["msd", "nnunet_v2"])
def test_three_commands_end_to_end(layout, tmp_path, one_thread, capsys):
    raw = write_user_phantom(tmp_path / "raw", layout, n_cases=5)
    held = tmp_path / "held"  # one case kept out of training, predicted as a user would
    held.mkdir()
    if layout == "msd":
        shutil.move(raw / "imagesTr" / "phantom_004.nii.gz", held / "phantom_004.nii.gz")
        meta = json.loads((raw / "dataset.json").read_text())
        meta["training"] = meta["training"][:4]
        (raw / "dataset.json").write_text(json.dumps(meta))
    else:
        for c in (0, 1):
            shutil.move(raw / "imagesTr" / f"phantom_004_{c:04d}.nii.gz", held / f"phantom_004_{c:04d}.nii.gz")
        meta = json.loads((raw / "dataset.json").read_text())
        meta["numTraining"] = 4
        (raw / "dataset.json").write_text(json.dumps(meta))
    gt = tmp_path / "gt"
    gt.mkdir()
    shutil.move(raw / "labelsTr" / "phantom_004.nii.gz", gt / "phantom_004.nii.gz")
    store_dir, run_dir = tmp_path / "data" / "ph", tmp_path / "runs" / "ph"

    assert main(["prepare", "--raw", str(raw), "--out", str(store_dir)]) == 0
    printed = capsys.readouterr().out
    assert "crop (D, H, W)" in printed and "CT: CT clip+z-score" in printed and "lesion" in printed
    store = PreparedDataset(store_dir)
    assert store.spec.split == "folds" and store.spec.name == meta["name"] and store.spec.num_channels == 2
    assert store.spec.labels == {0: "background", 1: "organ", 2: "lesion"}
    assert len(json.loads((store_dir / "splits_final.json").read_text())) == 4  # 4 cases: leave one out

    assert main(["train", "custom", "--data", str(store_dir), "--out", str(run_dir), "--profile", "smoke",
                 "--fold", "1", "--no-progress", *FAST]) == 0
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["name"] == "custom" and cfg["fold"] == 1 and cfg["dataset"] == meta["name"]
    summary = pd.read_csv(run_dir / "summary.csv")
    assert {"organ", "lesion"} <= set(summary["region"]) and {"DSC", "HD95", "HD95_strict"} <= set(summary["metric"])
    assert list(json.loads((run_dir / "results.json").read_text())["cases"]) == list(store.split(fold=1).test)

    pred = tmp_path / "pred"
    assert main(["predict", "--run", str(run_dir), "-i", str(held), "-o", str(pred), "--no-progress"]) == 0
    out = nib.load(pred / "phantom_004.nii.gz")
    ref = nib.load(gt / "phantom_004.nii.gz")
    assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)
    assert main(["evaluate", str(store_dir), "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "ev"),
                 "--convention", "both"]) == 0
    per_case = pd.read_csv(tmp_path / "ev" / "per_case.csv")
    assert set(per_case["region"]) == {"organ", "lesion"} and per_case["case_id"].unique().tolist() == ["phantom_004"]


def test_prepare_resumes_with_the_stored_plan(tmp_path):
    raw = write_user_phantom(tmp_path / "raw", "msd", n_cases=3)
    store = prepare_dataset(None, raw, tmp_path / "store", settings=SETTINGS, overrides={"batch_size": 3})
    (tmp_path / "store" / "cases" / "phantom_001.json").unlink()  # as if killed before this case finished
    again = prepare_dataset(None, raw, tmp_path / "store", settings=SETTINGS)
    assert again.case_ids == store.case_ids and again.spec.batch_size == 3
    with pytest.raises(ValueError, match="already has a plan"):
        prepare_dataset(None, raw, tmp_path / "store", settings=SETTINGS, overrides={"batch_size": 2})
    other = write_user_phantom(tmp_path / "raw2", "msd", n_cases=3)
    with pytest.raises(ValueError, match="prepared from"):
        prepare_dataset(None, other, tmp_path / "store", settings=SETTINGS)


def test_user_splits_file_and_fold_are_used(tmp_path):
    raw = write_user_phantom(tmp_path / "raw", "nnunet_v2", n_cases=4)
    folds = [{"train": ["phantom_000", "phantom_001", "phantom_002"], "val": ["phantom_003"]},
             {"train": ["phantom_001", "phantom_002", "phantom_003"], "val": ["phantom_000"]}]
    (raw / "splits_final.json").write_text(json.dumps(folds))
    store = prepare_dataset(None, raw, tmp_path / "store", settings=SETTINGS)
    assert store.split(fold=1).test == ("phantom_000",) and store.split(fold=1).train == tuple(folds[1]["train"])
    clean = store.split("clean", fold=0)
    assert clean.test == ("phantom_003",) and len(clean.val) == 1 and not set(clean.val) & set(clean.train)
    with pytest.raises(ValueError, match="fold 2 does not exist"):
        store.split(fold=2)
    cfg = store_config(store.spec, "paper", fold=1)
    assert cfg.patch_size == store.spec.patch_size and cfg.batch_size == store.spec.batch_size
    with pytest.raises(ValueError, match="'fold'.*set by --fold"):
        get_config("table1_synapse", "smoke", fold=1)


# ---------------------------------------------------------------- bad input: one line, nothing written


def _v2(tmp_path, n=3):
    return write_user_phantom(tmp_path / "raw", "nnunet_v2", n_cases=n)


def _msd(tmp_path, n=3):
    return write_user_phantom(tmp_path / "raw", "msd", n_cases=n)


def _rewrite(path, fn):
    img = nib.load(path)
    arr, aff = fn(np.asanyarray(img.dataobj), img.affine.copy())
    nib.save(nib.Nifti1Image(arr, aff), path)


def _no_dataset_json(tmp_path):
    raw = _msd(tmp_path)
    (raw / "dataset.json").unlink()
    return raw, "dataset.json: not found"


def _undeclared_label(tmp_path):
    raw = _v2(tmp_path)
    _rewrite(raw / "labelsTr" / "phantom_001.nii.gz", lambda a, f: (np.where(a == 2, 5, a).astype(np.uint8), f))
    return raw, r"phantom_001.nii.gz: unexpected label value\(s\) \[5\] outside the dataset.s label set .*declared in .*dataset.json"


def _non_integer_label(tmp_path):
    raw = _msd(tmp_path)
    _rewrite(raw / "labelsTr" / "phantom_002.nii.gz", lambda a, f: (a.astype(np.float32) * 0.5, f))
    return raw, r"phantom_002.nii.gz: \d+ non-integer label value"


def _channel_count_differs(tmp_path):
    raw = _msd(tmp_path)
    _rewrite(raw / "imagesTr" / "phantom_001.nii.gz", lambda a, f: (np.concatenate([a, a[..., :1]], -1), f))
    return raw, "phantom_001.nii.gz: expected 2 channel"


def _shape_differs(tmp_path):
    raw = _v2(tmp_path)
    _rewrite(raw / "labelsTr" / "phantom_000.nii.gz", lambda a, f: (a[:-1], f))
    return raw, "phantom_000.nii.gz: label shape"


def _affine_differs(tmp_path):
    raw = _msd(tmp_path)

    def shift(a, f):
        f[0, 3] += 2.0
        return a, f
    _rewrite(raw / "labelsTr" / "phantom_001.nii.gz", shift)
    return raw, "phantom_001.nii.gz: label affine differs"


def _listed_but_missing(tmp_path):
    raw = _msd(tmp_path)
    (raw / "imagesTr" / "phantom_002.nii.gz").unlink()
    return raw, r"phantom_002.nii.gz: listed in .*dataset.json .* but missing"


def _label_missing_v2(tmp_path):
    raw = _v2(tmp_path)
    (raw / "labelsTr" / "phantom_001.nii.gz").unlink()
    return raw, "labelsTr/phantom_001.nii.gz: label of case phantom_001"


def _channel_file_missing_v2(tmp_path):
    raw = _v2(tmp_path)
    (raw / "imagesTr" / "phantom_000_0001.nii.gz").unlink()
    return raw, "phantom_000_0001.nii.gz: channel file missing"


def _empty_images(tmp_path):
    raw = _v2(tmp_path)
    shutil.rmtree(raw / "imagesTr")
    (raw / "imagesTr").mkdir()
    return raw, "imagesTr: empty"


BAD = [_no_dataset_json, _undeclared_label, _non_integer_label, _channel_count_differs, _shape_differs,
       _affine_differs, _listed_but_missing, _label_missing_v2, _channel_file_missing_v2, _empty_images]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__.strip("_") for f in BAD])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(make, tmp_path, capsys):
    raw, pattern = make(tmp_path)
    out = tmp_path / "store"
    assert main(["prepare", "--raw", str(raw), "--out", str(out)]) == 2
    lines = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if ln and "%|" not in ln]  # no bars
    assert len(lines) == 1 and lines[0].startswith("sam3d prepare: error: ")
    err = lines[0]
    import re

    assert re.search(pattern, err), err
    assert not out.exists()


def test_dataset_json_content_errors(tmp_path):
    raw = _v2(tmp_path)
    meta = json.loads((raw / "dataset.json").read_text())
    for change, match in (({"labels": {"background": 0, "a": 2}}, "consecutive"),
                          ({"labels": {"a": 1}}, "background as label 0"),
                          ({"numTraining": 9}, "numTraining is 9"),
                          ({"file_ending": ".mha"}, "file_ending")):
        (raw / "dataset.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(DatasetFormatError, match=match):
            load_user_dataset(raw)
    # nnU-Net v2 region-based labels: the unions are reported, every member value is a class
    (raw / "dataset.json").write_text(json.dumps({**meta, "labels": {"background": 0, "whole": [1, 2], "core": 2},
                                                  "regions_class_order": [1, 2]}))
    ds = load_user_dataset(raw)
    assert ds.labels == {0: "background", 1: "label 1", 2: "core"} and ds.label_regions == {"whole": (1, 2)}


def test_check_data_lists_every_bad_case_of_a_user_dataset(tmp_path, capsys):
    raw, _ = _undeclared_label(tmp_path)  # phantom_001
    _rewrite(raw / "labelsTr" / "phantom_000.nii.gz", lambda a, f: (a[:-1], f))
    assert main(["check-data", str(raw)]) == 1
    err = capsys.readouterr().err
    assert "labelsTr/phantom_001.nii.gz: unexpected label value(s) [5]" in err
    assert "labelsTr/phantom_000.nii.gz: label shape" in err and "2 problem(s)" in err
    store = prepare_dataset(None, write_user_phantom(tmp_path / "ok", "msd", n_cases=3), tmp_path / "s", settings=SETTINGS)
    assert main(["check-data", str(store.root)]) == 0


def test_memory_model_is_the_per_voxel_slope_of_the_saved_tensors():
    """bytes(patch) = fixed + slope * voxels holds at a third, larger crop (what the planner relies on)."""
    import torch

    from sam3dlib.modeling.decoder import Decoder3D
    from sam3dlib.modeling.memory import _PROBES, _saved_bytes

    slope = training_bytes_per_voxel(1, 3)
    torch.manual_seed(0)
    dec = Decoder3D(256, 3).train()
    (b1, v1), big = ((_saved_bytes(dec, 1, 3, _PROBES[0]), np.prod(_PROBES[0])), (6, 96, 80))
    assert _saved_bytes(dec, 1, 3, big) == pytest.approx(b1 + slope * (np.prod(big) - v1), rel=1e-6)
    assert training_bytes_per_voxel(2, 3) > slope  # a second channel adds embeddings
