"""`sam3d train`: --resume takes the run's saved config; --allow-missing-labels records what it drops."""
from __future__ import annotations

import json

from _fixtures_train import copy_store, one_thread, synapse_store, tiny_config  # noqa: F401 (fixtures)

from sam3dlib.cli import main
from sam3dlib.data.store import PreparedDataset, case_paths
from sam3dlib.training import train

TINY = ["--set", "epochs=2", "--set", "iterations_per_epoch=2", "--set", "val_iterations=1",
        "--set", "patch_size=8,32,32"]


def test_resume_as_documented_uses_the_saved_config(synapse_store, tmp_path, one_thread):  # noqa: F811
    """README / docs/TRAINING.md: `sam3d train CONFIG --data D --out R --resume`, without --profile/--set."""
    run = tmp_path / "run"
    train(tiny_config(), synapse_store, run, progress=False, max_epochs=1)  # interrupted after epoch 1
    assert not (run / "finished.json").exists()
    base = ["train", "table1_synapse", "--data", str(synapse_store), "--out", str(run), "--no-progress",
            "--no-evaluate"]
    assert main([*base, "--resume", "--set", "lr=0.5"]) == 2  # an explicit change is still checked
    assert main([*base, "--resume"]) == 0
    assert json.loads((run / "finished.json").read_text())["epochs"] == 2
    assert json.loads((run / "config.json").read_text())["profile"] == "smoke"


def test_allow_missing_labels_records_the_dropped_cases(synapse_store, tmp_path, one_thread):  # noqa: F811
    store = PreparedDataset(copy_store(synapse_store, tmp_path / "store"))
    split = store.split("paper")
    train_case, test_case = split.train[0], split.test[0]
    for case in (train_case, test_case):
        case_paths(store.root, case)["label"].unlink()
    args = ["train", "table1_synapse", "--data", str(store.root), "--out", str(tmp_path / "run"), "--profile",
            "smoke", *TINY, "--no-progress"]
    assert main(args) == 2
    assert not (tmp_path / "run").exists()
    assert main([*args, "--allow-missing-labels"]) == 0
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["dropped_unlabelled_cases"] == {"train": [train_case], "val": [test_case]}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["dropped_unlabelled_cases"] == [test_case] and test_case not in results["cases"]

