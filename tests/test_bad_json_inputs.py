"""Broken or odd JSON the user hands in (a run's config.json, a dataset.json, a store's
dataset.json) and unknown names: ``sam3d`` answers with exit code 2 and one line naming the file."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from sam3dlib.cli import main
from sam3dlib.config import ExperimentConfig
from sam3dlib.data.check import check_user_dataset
from sam3dlib.data.store import StoreError
from sam3dlib.data.user_dataset import DatasetFormatError, load_user_dataset
from sam3dlib.data.user_phantoms import write_user_phantom
from sam3dlib.modeling.encoders import get_encoder_spec
from sam3dlib.modeling.run_checkpoint import BEST
from sam3dlib.study.registry import get_config
from sam3dlib.utils.errors import ConfigError


def _one_error_line(capsys, command: str) -> str:
    """The single ``sam3d CMD: error: ...`` line printed (no traceback, progress bars left out)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln and "%|" not in ln]
    assert len(lines) == 1 and lines[0].startswith(f"sam3d {command}: error: "), err
    return lines[0]


# ---------------------------------------------------------------- 1. a run's JSON files


def test_config_load_names_a_broken_file(tmp_path):
    path = tmp_path / "config.json"
    for text, match in (("{", "invalid JSON"), ("[1, 2]", "expected a JSON object"),
                        ('{"no_such_setting": 1}', "unknown config settings")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"^{path}: {match}"):
            ExperimentConfig.load(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ConfigError, match="invalid JSON"):
        ExperimentConfig.load(path)


def test_train_resume_with_a_broken_config_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"name": "table1_synapse",')
    code = main(["train", "table1_synapse", "--data", str(tmp_path / "store"), "--out", str(out), "--resume"])
    assert code == 2
    assert str(out / "config.json") in _one_error_line(capsys, "train")


def _run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / BEST).write_bytes(b"")
    (run / "config.json").write_text(get_config("table1_synapse", "smoke").to_json())
    (run / "dataset_meta.json").write_text(json.dumps({"dataset": "synapse"}))
    (run / "provenance.json").write_text("{}")
    return run


@pytest.mark.parametrize("name", ["config.json", "dataset_meta.json", "provenance.json"])
def test_predict_with_a_broken_run_file_is_one_line(name, tmp_path, capsys):
    run = _run_folder(tmp_path)
    (run / name).write_text("{not json")
    scan = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), scan)
    code = main(["predict", "--run", str(run), "-i", str(scan), "-o", str(tmp_path / "o.nii.gz")])
    assert code == 2
    line = _one_error_line(capsys, "predict")
    assert f"{run / name}: invalid JSON" in line


# ---------------------------------------------------------------- 2. unknown encoder


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown encoder 'foo'; choose one of"):
        get_encoder_spec("foo")


# ---------------------------------------------------------------- 4, 5. a user dataset's dataset.json


def _edit_dataset_json(raw, **changes):
    meta = json.loads((raw / "dataset.json").read_text())
    meta.update(changes)
    (raw / "dataset.json").write_text(json.dumps(meta))


def test_msd_modality_keys_with_leading_zeros(tmp_path):
    raw = write_user_phantom(tmp_path / "raw", "msd", n_cases=2)
    modality = json.loads((raw / "dataset.json").read_text())["modality"]
    _edit_dataset_json(raw, modality={f"0{k}": v for k, v in modality.items()})
    assert load_user_dataset(raw).channel_names == tuple(modality[str(i)] for i in range(len(modality)))
    _edit_dataset_json(raw, modality={"0": "CT", "00": "MR"})  # channel 0 twice
    with pytest.raises(DatasetFormatError, match="each once"):
        load_user_dataset(raw)


def test_non_numeric_num_training(tmp_path, capsys):
    raw = write_user_phantom(tmp_path / "raw", "nnunet_v2", n_cases=2)
    _edit_dataset_json(raw, numTraining="abc")
    assert main(["prepare", "--raw", str(raw), "--out", str(tmp_path / "store")]) == 2
    line = _one_error_line(capsys, "prepare")
    assert "dataset.json: 'numTraining' must be an integer" in line
    assert not (tmp_path / "store").exists()
    problems = check_user_dataset(raw)
    assert any("'numTraining' must be an integer" in str(p) for p in problems)


# ---------------------------------------------------------------- 6. a paper dataset in the MSD layout


@pytest.mark.parametrize("text, match", [
    ("[]", "expected a JSON object, got list"),
    ('{"training": [{"label": "./labelsTr/lung_001.nii.gz"}]}', "training entry 0: expected"),
    ('{"training": {"image": "x"}}', "'training' must be a list"),
    (b"\xff\xfe", "invalid JSON"),
], ids=["list", "no_image", "training_not_list", "not_utf8"])
def test_paper_msd_dataset_json_is_one_line(text, match, tmp_path, capsys):
    raw = tmp_path / "Task06_Lung"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    path = raw / "dataset.json"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    assert main(["prepare", "lung", "--raw", str(raw), "--out", str(tmp_path / "store"), "--layout", "msd"]) == 2
    line = _one_error_line(capsys, "prepare")
    assert f"{path}: " in line and match in line


# ---------------------------------------------------------------- 7. a store's dataset.json


def test_store_meta_is_read_by_one_checker(tmp_path, capsys):
    from sam3dlib.data.store import read_meta

    store = tmp_path / "store"
    (store / "cases").mkdir(parents=True)
    (store / "dataset.json").write_text("{")
    with pytest.raises(StoreError, match=f"^{store / 'dataset.json'}: invalid JSON"):
        read_meta(store)
    (store / "dataset.json").write_text("[]")
    with pytest.raises(StoreError, match="expected a JSON object"):
        read_meta(store)
    (store / "dataset.json").write_text("{")
    for args in (["check-data", str(store)], ["check-data", "synapse", str(store)]):
        assert main(args) == 1  # a problem of the checked folder, listed like the others
        assert f"{store / 'dataset.json'}: invalid JSON" in capsys.readouterr().err


def test_prepare_into_a_store_with_broken_meta_is_one_line(tmp_path, capsys):
    raw = write_user_phantom(tmp_path / "raw", "msd", n_cases=2)
    store = tmp_path / "store"
    store.mkdir()
    (store / "dataset.json").write_text("{")
    assert main(["prepare", "--raw", str(raw), "--out", str(store)]) == 2
    assert f"{store / 'dataset.json'}: invalid JSON" in _one_error_line(capsys, "prepare")


# ---------------------------------------------------------------- 8. custom on a paper store


def test_custom_on_a_paper_store_takes_its_committed_plan(synapse_store):
    """One road: a paper store is a store with a plan; ``custom`` takes its crop and batch, and a
    fold is dropped because the plan names the shipped split."""
    from sam3dlib.data.specs import get_spec
    from sam3dlib.pipeline import config_for

    cfg, spec = config_for(synapse_store, "paper", fold=3), get_spec("synapse")
    assert (cfg.patch_size, cfg.batch_size, cfg.fold) == (spec.patch_size, spec.batch_size, None)


# ---------------------------------------------------------------- 15. a hand-edited fold of a store


def test_store_folds_are_checked_by_the_one_validator(tmp_path):
    from sam3dlib.data.io import DataFileError
    from sam3dlib.data.prepare import prepare_dataset
    from sam3dlib.data.store import SPLITS_FILE, PreparedDataset
    from sam3dlib.pipeline import planner_settings

    store = prepare_dataset(None, write_user_phantom(tmp_path / "raw", "msd", n_cases=3), tmp_path / "s",
                            settings=planner_settings(), progress=False)
    path = store.root / SPLITS_FILE
    folds = json.loads(path.read_text())
    path.write_text(json.dumps([{"val": folds[0]["val"]}] + folds[1:]))
    with pytest.raises(DataFileError, match=f"^{path}: .*train"):
        PreparedDataset(store.root).folds()


# ---------------------------------------------------------------- 24. paper-only flags with your own dataset


def test_allow_missing_labels_is_refused_for_an_own_dataset(tmp_path, capsys):
    raw = write_user_phantom(tmp_path / "raw", "msd", n_cases=2)
    assert main(["prepare", "--raw", str(raw), "--out", str(tmp_path / "s"), "--allow-missing-labels"]) == 2
    assert "--allow-missing-labels applies to the paper datasets" in _one_error_line(capsys, "prepare")
    assert not (tmp_path / "s").exists()
