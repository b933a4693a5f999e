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


# ---------------------------------------------------------------- who owns a run folder

_HOLDER = """
import sys, time
from sam3dlib.utils import folder_lock
folder_lock.acquire(sys.argv[1], "run folder (--out)")
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_run(tmp_path):
    """A run folder held by another live process (as a training in its first epoch holds it)."""
    import subprocess
    import sys

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield run, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_training_into_a_held_run_folder_stops_naming_the_holder(held_run, synapse_store):
    """Two trainings into one --out: the second stops with one line naming the first; --force
    cannot take the folder from a live holder, and nothing of the run is written or deleted."""
    from _fixtures_train import tiny_config

    from sam3dlib.training import train
    from sam3dlib.utils.folder_lock import FolderInUseError

    run, proc = held_run
    (run / "config.json").write_text("{}")  # the holder's file: not deleted by --force
    for force in (False, True):
        with pytest.raises(FolderInUseError, match=rf"run folder \(--out\) {run} is in use by pid {proc.pid} on host"):
            train(tiny_config(), synapse_store, run, progress=False, force=force)
    assert sorted(p.name for p in run.iterdir()) == [".sam3d.lock", "config.json"]


def test_a_crashed_holder_does_not_leave_the_run_folder_stuck(held_run):
    """SIGKILL of the holder frees the folder (the kernel drops its lock); the record is replaced."""
    import os

    from sam3dlib.utils import folder_lock

    run, proc = held_run
    proc.kill()
    proc.wait()
    with folder_lock.hold(run, "run folder (--out)"):
        record = json.loads((run / folder_lock.LOCK_FILE).read_text())
        assert record["pid"] == os.getpid()
    assert (run / folder_lock.LOCK_FILE).read_text() == ""


def test_a_live_holder_named_in_the_record_holds_the_folder_without_a_kernel_lock(tmp_path):
    """Where the file system does not lock, the record decides: a live pid on this host (same
    start time) holds the folder, a dead one does not."""
    import os
    import socket
    import subprocess
    import sys

    from sam3dlib.utils import folder_lock

    run = tmp_path / "run"
    run.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": socket.gethostname(), "pid": live.pid, "since": "then", "command": "sam3d train",
                  "process_start": folder_lock.process_start_time(live.pid)}
        (run / folder_lock.LOCK_FILE).write_text(json.dumps(record))  # no flock held by anyone
        with pytest.raises(folder_lock.FolderInUseError, match=f"pid {live.pid} .*sam3d train"):
            folder_lock.acquire(run, "run folder (--out)")
    finally:
        live.kill()
        live.wait()
    folder_lock.acquire(run)  # the same record, its process now dead
    try:
        assert json.loads((run / folder_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        folder_lock.release(run)


def test_resume_on_rebuilt_data_is_refused_and_never_rewrites_what_earlier_epochs_used(smoke_run, synapse_store,
                                                                                      tmp_path):
    """A store rebuilt with another spacing under an unfinished run: resume refuses, saying what
    changed; told explicitly, it continues and keeps the run's dataset_meta.json."""
    from _fixtures_train import copy_store

    from sam3dlib.training import train
    from sam3dlib.training.run_dir import RunExistsError
    from sam3dlib.utils.finished import FINISHED

    store = copy_store(synapse_store, tmp_path / "store")
    run = tmp_path / "run"
    shutil.copytree(smoke_run["run"], run, ignore=shutil.ignore_patterns(FINISHED, "predictions"))
    before = (run / "dataset_meta.json").read_bytes()
    meta = json.loads((store / "dataset.json").read_text())
    old_spacing = meta["target_spacing"]
    meta["target_spacing"] = [old_spacing[0] * 2, *old_spacing[1:]]
    (store / "dataset.json").write_text(json.dumps(meta))
    cfg = smoke_run["config"]
    with pytest.raises(RunExistsError, match=r"the data in .* changed since the run started \(target_spacing: "
                                             + r"\[" + str(old_spacing[0])):
        train(cfg, store, run, resume=True, progress=False)
    assert (run / "dataset_meta.json").read_bytes() == before
    train(cfg, store, run, resume=True, progress=False, allow_data_change=True)
    assert (run / "dataset_meta.json").read_bytes() == before
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["resumed_on_changed_data"][0].startswith("target_spacing")
    assert (run / FINISHED).is_file()
