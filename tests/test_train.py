"""Training: a smoke run learns, files and provenance are written, resume is exact."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from _fixtures_train import foreground_dice_and_chance, tiny_config

from sam3dlib.data.store import PreparedDataset
from sam3dlib.modeling.run_checkpoint import load_checkpoint
from sam3dlib.study.registry import get_config
from sam3dlib.training import RunExistsError, poly_lr, train
from sam3dlib.training.logging import LOG_COLUMNS


def test_poly_lr_schedule():
    c = get_config("table1_synapse", "paper")
    assert poly_lr(c, 0) == pytest.approx(1e-2)
    assert poly_lr(c, 500) == pytest.approx(1e-2 * 0.5**0.9)
    assert poly_lr(c, 999) == pytest.approx(1e-2 * 0.001**0.9)


def test_smoke_run_learns(smoke_run, synapse_store):
    run = smoke_run["run"]
    log = pd.read_csv(run / "log.csv")
    assert list(log.columns) == list(LOG_COLUMNS)
    assert (log["steps"] == 8).all() and (log["step_seconds"] > 0).all() and (log["peak_memory_gib"] > 0).all()
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    scores = foreground_dice_and_chance(run, synapse_store)  # (foreground Dice, chance) per test case
    assert len(scores) == 2 and all(dice > 3 * chance for dice, chance in scores), scores
    summary = pd.read_csv(run / "summary.csv")
    assert {"region", "metric", "mean"} <= set(summary.columns) and "average" in set(summary["region"])


def test_run_directory_contents(smoke_run):
    run = smoke_run["run"]
    for name in ("config.json", "provenance.json", "dataset_meta.json", "training_curve.png",
                 "checkpoints/latest.pt", "checkpoints/best.pt", "per_case.csv", "summary.csv"):
        assert (run / name).is_file(), name
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["phantom"] is True and prov["random_encoder"] is True and prov["encoder_sha256"] == "random init"
    assert prov["protocol"] == "paper" and prov["config"]["encoder"] == "vit_tiny"
    assert {"torch", "monai", "segment-anything", "numpy"} <= set(prov["packages"]) and "git_commit" in prov
    ck = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ck["epoch"] == 3 and set(ck["rng"]) >= {"torch", "numpy", "python"} and "optimizer" in ck
    assert not any(k.startswith("encoder") for k in ck["decoder"])  # only the decoder is saved


def test_resume_equals_uninterrupted(synapse_store, tmp_path, one_thread):
    cfg = tiny_config(epochs=3, cache_dir=str(tmp_path / "cache"))
    full = train(cfg, synapse_store, tmp_path / "full", progress=False)
    part = train(cfg, synapse_store, tmp_path / "part", progress=False, max_epochs=1)  # "interrupted"
    assert load_checkpoint(part / "checkpoints" / "latest.pt")["epoch"] == 1
    train(cfg, synapse_store, tmp_path / "part", resume=True, progress=False)
    a = load_checkpoint(full / "checkpoints" / "latest.pt")
    b = load_checkpoint(part / "checkpoints" / "latest.pt")
    assert a["epoch"] == b["epoch"] == 3
    for k in a["decoder"]:
        assert torch.equal(a["decoder"][k], b["decoder"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    with pytest.raises(RunExistsError, match="--resume"):
        train(cfg, synapse_store, tmp_path / "full", progress=False)
    with pytest.raises(RunExistsError, match="lr"):
        train(cfg.replace(lr=0.5), synapse_store, tmp_path / "full", resume=True, progress=False)


def test_online_mode_trains(synapse_store, tmp_path, one_thread):
    cfg = tiny_config(encoder_mode="online", epochs=1, iterations_per_epoch=1, cache_dir=str(tmp_path / "cache"))
    run = train(cfg, synapse_store, tmp_path / "online", progress=False)
    log = pd.read_csv(run / "log.csv")
    assert len(log) == 1 and np.isfinite(log["train_loss"][0]) and not (tmp_path / "cache").exists()


def test_wrong_dataset_is_refused(synapse_store, tmp_path):
    with pytest.raises(ValueError, match="holds 'synapse' data"):
        train(get_config("table2_acdc", "smoke"), synapse_store, tmp_path / "x", progress=False)


@pytest.mark.parametrize("mode", ["online", "cached"])
def test_encoder_runs_every_step_only_online(synapse_store, tmp_path, monkeypatch, one_thread, mode):
    """The feature source chosen from encoder_mode: online encodes each batch, cached never does."""
    from sam3dlib.modeling.sam3d import SAM3D
    from sam3dlib.training.feature_source import CachedFeatures, OnlineEncoder, feature_source
    from sam3dlib.training.trainer import Trainer

    calls, training = [], []  # encoder calls once the feature source is prepared (cached: after the cache is built)
    encode, prepare = SAM3D.encode, Trainer.prepare_features
    monkeypatch.setattr(SAM3D, "encode", lambda self, volume: (calls.append(volume.shape) if training else None)
                        or encode(self, volume))
    monkeypatch.setattr(Trainer, "prepare_features", lambda self: prepare(self) or training.append(True))
    cfg = tiny_config(encoder_mode=mode, epochs=1, iterations_per_epoch=2, val_iterations=1,
                      cache_dir=str(tmp_path / "cache"))
    source = feature_source(cfg, synapse_store)
    assert isinstance(source, OnlineEncoder if mode == "online" else CachedFeatures) and source.mode == mode
    train(cfg, synapse_store, tmp_path / "run", progress=False)
    assert len(calls) == (3 if mode == "online" else 0)  # 2 training steps + 1 validation batch
    assert (tmp_path / "cache").is_dir() == (mode == "cached")


def test_one_finished_marker(synapse_store, tmp_path, one_thread, capsys):
    """finished.json alone marks a finished run: the trainer writes it last, predict warns without it."""
    import warnings

    from sam3dlib.cli import main
    from sam3dlib.inference.predictor import UnfinishedRunWarning, load_run
    from sam3dlib.pipeline import is_scored
    from sam3dlib.utils.finished import FINISHED, is_finished

    cfg = tiny_config(epochs=2, iterations_per_epoch=1, cache_dir=str(tmp_path / "cache"))
    run = train(cfg, synapse_store, tmp_path / "run", progress=False, max_epochs=1)
    assert (run / "checkpoints" / "latest.pt").is_file() and not is_finished(run)
    with pytest.warns(UnfinishedRunWarning, match="unfinished training run.*epoch 1 of 2"):
        assert not load_run(run, "cpu", "latest").finished
    store = PreparedDataset(synapse_store)
    scan = store.properties(store.split("paper").test[0])["image_files"][0]
    argv = ["predict", "--run", str(run), "-i", scan, "-o", str(tmp_path / "seg.nii.gz"), "--device", "cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "sam3d predict: warning:" in err and "unfinished" in err and "Traceback" not in err

    train(cfg, synapse_store, run, resume=True, progress=False)
    assert is_finished(run) and json.loads((run / FINISHED).read_text())["epochs"] == 2
    assert not is_scored(run)  # trained, test cases not scored yet
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfinishedRunWarning)
        assert load_run(run, "cpu").finished
    assert main(argv) == 0 and "warning" not in capsys.readouterr().err


def test_smoke_experiment_is_finished_and_scored(smoke_run):
    from sam3dlib.pipeline import RESULTS_FILE, is_scored

    run = smoke_run["run"]
    assert is_scored(run)
    (run / RESULTS_FILE).rename(run / "results.moved")
    try:
        assert not is_scored(run)  # killed during evaluation: scored again on resume
    finally:
        (run / "results.moved").rename(run / RESULTS_FILE)
