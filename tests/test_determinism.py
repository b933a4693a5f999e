"""Determinism: the same seed and config give bit-identical smoke results on CPU twice in a row,
and every result records its seed."""
from __future__ import annotations

import json

import pandas as pd
import torch
from _fixtures_train import tiny_config

from sam3dlib.modeling.run_checkpoint import load_checkpoint
from sam3dlib.pipeline import RESULTS_FILE, run_experiment
from sam3dlib.training import train
from sam3dlib.training.logging import TIMING_COLUMNS


def _run(store, root, name, seed):
    cfg = tiny_config(epochs=1, iterations_per_epoch=2, seed=seed, cache_dir=str(root / f"cache_{name}"))
    return run_experiment(cfg, store, root / name, progress=False)


def test_same_seed_gives_bit_identical_smoke_metrics(synapse_store, tmp_path, one_thread):
    a = _run(synapse_store, tmp_path, "a", seed=3)
    b = _run(synapse_store, tmp_path, "b", seed=3)  # own feature cache: encoding is repeated too
    for name in ("per_case.csv", "summary.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    log_a, log_b = (pd.read_csv(r / "log.csv").drop(columns=list(TIMING_COLUMNS)) for r in (a, b))  # minus clock/machine
    pd.testing.assert_frame_equal(log_a, log_b)
    da = load_checkpoint(a / "checkpoints" / "latest.pt")["decoder"]
    db = load_checkpoint(b / "checkpoints" / "latest.pt")["decoder"]
    assert all(torch.equal(da[k], db[k]) for k in da)
    for run in (a, b):  # the seed is recorded with the results
        assert json.loads((run / RESULTS_FILE).read_text())["seed"] == 3
        assert json.loads((run / "provenance.json").read_text())["seed"] == 3
        assert json.loads((run / "config.json").read_text())["seed"] == 3
        assert json.loads((run / "finished.json").read_text())["seed"] == 3

    cfg = tiny_config(epochs=1, iterations_per_epoch=2, seed=4, cache_dir=str(tmp_path / "cache_a"))
    c = train(cfg, synapse_store, tmp_path / "c", progress=False)  # and the seed matters
    dc = load_checkpoint(c / "checkpoints" / "latest.pt")["decoder"]
    assert not all(torch.equal(da[k], dc[k]) for k in da)
    assert json.loads((c / "provenance.json").read_text())["seed"] == 4
