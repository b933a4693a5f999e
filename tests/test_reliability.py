"""Failing inputs from public bug reports, each kept as a test of the kind of fault it stands for
(docs/RELIABILITY.md): store paths, run-folder ownership, headers, versions, links, workers."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sam3dlib.utils.errors import MissingFileError

# ---------------------------------------------------------------- the store's paths


def test_store_paths_survive_a_change_of_working_directory(tmp_path, monkeypatch):
    """A store prepared with a relative --raw records absolute source paths (usable from anywhere)."""
    from sam3dlib.data.phantoms import write_phantom
    from sam3dlib.data.prepare import prepare_dataset
    from sam3dlib.data.store import PreparedDataset

    write_phantom("synapse", tmp_path / "raw", n_cases=2, size="tiny")
    monkeypatch.chdir(tmp_path)
    prepare_dataset("synapse", Path("raw"), Path("store"))
    store = PreparedDataset("store")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert store.root == tmp_path / "store"
    for case_id in store.case_ids:
        props = store.properties(case_id)
        assert Path(props["label_file"]).is_absolute() and Path(props["label_file"]).is_file()
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in props["image_files"])
    store.check_source_labels(store.case_ids, "needed")


def test_missing_original_labels_stop_an_experiment_before_training(synapse_store, tmp_path):
    """A store whose test labels cannot be found (relative paths of an older store) is refused
    before the first training step, naming the case and the recorded path."""
    from sam3dlib.data.store import PreparedDataset
    from sam3dlib.study.experiment import run_experiment
    from sam3dlib.study.registry import get_config

    store_dir = tmp_path / "store"
    shutil.copytree(synapse_store, store_dir)
    cfg = get_config("table1_synapse", "smoke", epochs=1, iterations_per_epoch=1)
    test = [c for c in PreparedDataset(store_dir).split(cfg.protocol).test]
    props_path = store_dir / "cases" / f"{test[0]}.json"
    props = json.loads(props_path.read_text())
    props["label_file"] = "raw/label/" + Path(props["label_file"]).name
    props_path.write_text(json.dumps(props))
    with pytest.raises(MissingFileError, match=rf"{test[0]} \(relative path raw/label/"):
        run_experiment(cfg, store_dir, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
