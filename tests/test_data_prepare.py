"""Readers on every raw layout, prepare (incl. resume), the prediction round trip, nnU-Net v1 input."""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sam3dlib.cli import main
from sam3dlib.data.phantoms import write_phantom
from sam3dlib.data.plans import committed_plan, paper_plan, spec_from_meta
from sam3dlib.data.prepare import prepare_dataset, target_spacing_v21
from sam3dlib.data.preprocess import preprocess_case, restore_label, save_label_nifti
from sam3dlib.data.readers import find_raw_cases
from sam3dlib.data.specs import get_spec
from sam3dlib.data.store import PreparedDataset, StoreError, case_paths

DATASETS = ["synapse", "acdc", "brats", "lung"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Each dataset's tiny phantom, prepared: {dataset: (raw_root, store)}."""
    out = {}
    for ds in DATASETS:
        base = tmp_path_factory.mktemp(ds)
        raw = write_phantom(ds, base / "raw", size="tiny")
        out[ds] = (raw, prepare_dataset(ds, raw, base / "store"))
    return out


#: sha256 of every file of each paper dataset's tiny phantom store, recorded with the code before
#: the paper datasets got committed plans (properties with the raw root replaced by ``<RAW>``;
#: ``dataset.json`` as sorted JSON without the version, raw root and plan)
STORE_SHA256 = Path(__file__).parent / "data" / "paper_store_sha256.json"


def store_digest(root: Path, raw: Path) -> dict[str, str]:
    """``{file name: sha256}`` of a store's cases and its dataset-level settings."""
    out = {}
    for f in sorted((root / "cases").iterdir()):
        data = f.read_bytes()
        if f.suffix == ".json":
            data = data.replace(str(raw.resolve()).encode(), b"<RAW>").replace(str(raw).encode(), b"<RAW>")
        out[f.name] = hashlib.sha256(data).hexdigest()
    meta = {k: v for k, v in json.loads((root / "dataset.json").read_text()).items()
            if k not in ("sam3dlib_version", "source_root", "plan", "expected_cases")}  # bookkeeping, not settings
    out["dataset.json"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    return out


@pytest.mark.parametrize("ds", DATASETS)
def test_paper_stores_are_byte_identical_to_before_plans(prepared, ds):
    """The committed plans reproduce the paper datasets' stores byte for byte, and the store
    carries its dataset's committed plan."""
    raw, store = prepared[ds]
    assert store_digest(store.root, raw) == json.loads(STORE_SHA256.read_text())[ds]
    assert store.meta["plan"] == committed_plan(ds) == paper_plan(ds)


def test_a_store_without_a_plan_reads_its_committed_plan(prepared):
    """Stores prepared before plans were written into them keep working: the plan reader falls
    back to their dataset's committed plan."""
    _, store = prepared["acdc"]
    meta = {k: v for k, v in store.meta.items() if k != "plan"}
    assert spec_from_meta(meta) == store.spec == get_spec("acdc")


@pytest.mark.parametrize("ds", DATASETS)
def test_store_contents(prepared, ds):
    raw, store = prepared[ds]
    assert store.case_ids == sorted(c.case_id for c in find_raw_cases(ds, raw))
    assert store.meta["source_layout"] == {"synapse": "btcv", "acdc": "acdc"}.get(ds, "msd")
    scheme = store.meta["normalization"]["scheme"]
    assert scheme == ("CT" if ds in ("synapse", "lung") else "nonCT")
    if ds == "brats":
        assert store.meta["normalization"]["use_nonzero_mask"] == [True] * 4
    for cid in store.case_ids:
        img, lab = store.image(cid), store.label(cid)
        assert img.dtype == np.float32 and img.shape[0] == store.spec.num_channels
        assert lab.dtype == np.uint8 and lab.shape == img.shape[1:]
        assert np.isfinite(img).all() and set(np.unique(lab)) <= set(store.spec.labels)
    assert store.split().train and store.split("clean").val


@pytest.mark.parametrize("ds", DATASETS)
def test_round_trip_to_original_geometry(prepared, ds, tmp_path):
    """A prediction equal to the prepared label maps back onto the original label file."""
    _, store = prepared[ds]
    exact = separate = 0
    for cid in store.case_ids:
        props = store.properties(cid)
        orig = nib.load(props["label_file"])
        orig_arr = np.asarray(orig.dataobj).astype(np.uint8)
        back = restore_label(np.asarray(store.label(cid)), props)
        assert back.shape == orig_arr.shape
        if props["shape_after_resampling"] == props["shape_after_crop"]:  # no resampling: must be exact
            assert np.array_equal(back, orig_arr), cid
            exact += 1
        else:  # resampled twice: nearly identical (observed >= 0.9995 on the phantoms)
            assert (back == orig_arr).mean() > 0.995, cid
        # class scores path (K x D x H x W): the same answer; with a separate (anisotropic) axis the
        # scores are resampled class by class, so boundary voxels may differ (observed >= 0.9998)
        onehot = np.eye(store.spec.num_classes, dtype=np.float32)[np.asarray(store.label(cid))].transpose(3, 0, 1, 2)
        from_scores = restore_label(onehot, props)
        if props["separate_axis"] is None:
            assert np.array_equal(from_scores, back), cid
        else:
            separate += props["shape_after_resampling"] != props["shape_after_crop"]
            assert (from_scores == back).mean() > 0.999, cid
    assert exact >= len(store.case_ids) // 2
    if ds in ("synapse", "acdc"):  # anisotropic phantoms: the separate-axis path is exercised
        assert separate >= 1
    cid = store.case_ids[0]
    out = save_label_nifti(np.asarray(store.label(cid)), store.properties(cid), tmp_path / "pred.nii.gz", prepared=True)
    written, orig = nib.load(out), nib.load(store.properties(cid)["label_file"])
    assert np.allclose(written.affine, orig.affine) and written.shape == orig.shape


def test_preprocess_case_matches_store(prepared):
    raw, store = prepared["lung"]
    cid = store.case_ids[0]
    case = next(c for c in find_raw_cases("lung", raw) if c.case_id == cid)
    img, lab, props = preprocess_case(list(case.images), store.meta)  # unlabelled new scan
    assert lab is None and np.allclose(img, store.image(cid), atol=1e-5)
    assert props["crop_bbox"] == store.properties(cid)["crop_bbox"]


def test_prepare_is_resumable(tmp_path):
    raw = write_phantom("lung", tmp_path / "raw", n_cases=3, size="tiny")
    store = prepare_dataset("lung", raw, tmp_path / "store")
    first, second = (case_paths(store.root, c)["image"] for c in store.case_ids[:2])
    mtimes = first.stat().st_mtime_ns, second.stat().st_mtime_ns
    case_paths(store.root, store.case_ids[1])["properties"].unlink()  # an interrupted case
    store2 = prepare_dataset("lung", raw, tmp_path / "store")
    assert store2.case_ids == store.case_ids
    assert first.stat().st_mtime_ns == mtimes[0] and second.stat().st_mtime_ns != mtimes[1]
    assert not list((tmp_path / "store" / "cases").glob(".*tmp"))  # no temp files left


def test_target_spacing_rule():
    sp = np.array([[5.0, 0.7, 0.7], [2.5, 0.8, 0.8], [5.0, 0.75, 0.75], [3.0, 0.7, 0.7]])
    shapes = np.array([[60, 512, 512]] * 4)
    t = target_spacing_v21(sp, shapes)
    assert t[1:] == [0.725, 0.725] and t[0] == pytest.approx(np.percentile(sp[:, 0], 10))
    assert target_spacing_v21(sp, np.array([[400, 512, 512]] * 4))[0] == 4.0  # no anisotropy trigger: median


def test_msd_channel_files_layout(prepared, tmp_path):
    """nnU-Net raw layout: one file per modality (_0000.._0003) instead of a 4D file."""
    raw, _ = prepared["brats"]
    case = find_raw_cases("brats", raw)[0]
    img = nib.load(case.images[0])
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for c in range(4):
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., c], img.affine), tmp_path / "imagesTr" / f"{case.case_id}_{c:04d}.nii.gz")
    shutil.copy(case.label, tmp_path / "labelsTr" / case.label.name)
    found = find_raw_cases("brats", tmp_path)
    assert [c.case_id for c in found] == [case.case_id] and len(found[0].images) == 4
    assert found[0].label is not None


def _lps(affine):
    """NIfTI RAS affine -> SimpleITK origin, spacing, direction (LPS) as nnU-Net v1 stores them."""
    m = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine)
    sp = np.linalg.norm(m[:3, :3], axis=0)
    return tuple(m[:3, 3]), tuple(sp), tuple((m[:3, :3] / sp).ravel())


def test_nnunet_v1_preprocessed_folder(prepared, tmp_path):
    """A tiny nnU-Net v1 task folder (npz + pkl + plans + splits_final) is read like the paper's data."""
    _, store = prepared["synapse"]
    task = tmp_path / "Task002_Synapse"
    stage = task / "sam3d_Data_plans_v2.1_stage1"
    stage.mkdir(parents=True)
    for cid in store.case_ids[:3]:
        p = store.properties(cid)
        seg = np.asarray(store.label(cid)).astype(np.float32)[None]
        np.savez_compressed(stage / f"{cid}.npz", data=np.concatenate([np.asarray(store.image(cid)), seg]))
        origin, spacing, direction = _lps(p["original_affine"])
        pkl = {"original_size_of_raw_data": np.array(p["original_shape"][::-1]), "original_spacing": np.array(p["original_spacing"]),
               "itk_origin": origin, "itk_spacing": spacing, "itk_direction": direction, "crop_bbox": p["crop_bbox"],
               "size_after_cropping": tuple(p["shape_after_crop"]), "spacing_after_resampling": np.array(p["spacing_after_resampling"]),
               "list_of_data_files": p["image_files"], "seg_file": p["label_file"]}
        with open(stage / f"{cid}.pkl", "wb") as fh:
            pickle.dump(pkl, fh)
    n = store.meta["normalization"]
    plans = {"normalization_schemes": {0: "CT"}, "use_mask_for_norm": {0: False}, "transpose_forward": [0, 1, 2],
             "dataset_properties": {"intensityproperties": {0: {k: n[k] for k in ("mean", "sd", "percentile_00_5", "percentile_99_5")}}}}
    with open(task / "sam3d_Plansv2.1_plans_3D.pkl", "wb") as fh:
        pickle.dump(plans, fh)
    with open(task / "splits_final.pkl", "wb") as fh:
        pickle.dump([{"train": np.array(store.case_ids[:2]), "val": np.array(store.case_ids[2:3])}], fh)
    cases = find_raw_cases("synapse", task)
    assert [c.layout for c in cases] == ["nnunet_v1"] * 3
    st = prepare_dataset("synapse", task, tmp_path / "store")
    assert st.meta["source_layout"] == "nnunet_v1" and st.meta["normalization"]["scheme"] == "CT"
    assert "nnunet_splits_final_fold0" in st.meta
    for cid in st.case_ids:
        assert np.array_equal(st.image(cid), store.image(cid)) and np.array_equal(st.label(cid), store.label(cid))
        props = st.properties(cid)
        assert np.allclose(props["original_affine"], store.properties(cid)["original_affine"], atol=1e-4)
        assert np.array_equal(restore_label(np.asarray(st.label(cid)), props),
                              restore_label(np.asarray(store.label(cid)), store.properties(cid)))


def test_store_errors(tmp_path):
    with pytest.raises(StoreError, match="sam3d prepare"):
        PreparedDataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"dataset": "lung"}))
    with pytest.raises(StoreError, match="cases"):
        PreparedDataset(tmp_path)


def test_cli_prepare(tmp_path, capsys):
    raw = write_phantom("lung", tmp_path / "raw", n_cases=2, size="tiny")
    assert main(["prepare", "lung", "--raw", str(raw), "--out", str(tmp_path / "s"), "--target-spacing", "2", "1", "1"]) == 0
    assert PreparedDataset(tmp_path / "s").meta["target_spacing"] == [2.0, 1.0, 1.0]
    assert main(["prepare", "lung", "--raw", str(raw), "--out", str(tmp_path / "t"), "--target-spacing", "x"]) == 2
    assert main(["prepare", "lung", "--raw", str(tmp_path / "missing"), "--out", str(tmp_path / "u")]) == 2
    assert "missing" in capsys.readouterr().err
