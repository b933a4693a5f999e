"""Determinism: the same seed and config give bit-identical smoke results on CPU twice in a row,
and every result records its seed. The first run is the session's smoke run (tests/_fixtures_train.py)."""
from __future__ import annotations

import json

import pandas as pd
import torch

from sam3dlib.data.specs import get_spec
from sam3dlib.modeling.factory import build_model
from sam3dlib.modeling.run_checkpoint import load_checkpoint
from sam3dlib.pipeline import RESULTS_FILE, run_experiment
from sam3dlib.training.logging import TIMING_COLUMNS


def test_same_seed_gives_bit_identical_smoke_metrics(smoke_run, synapse_store, tmp_path, one_thread):
    a = smoke_run["run"]
    cfg = smoke_run["config"].replace(cache_dir=str(tmp_path / "cache_b"))  # own feature cache: encoding repeated
    b = run_experiment(cfg, synapse_store, tmp_path / "b", progress=False)
    for name in ("per_case.csv", "summary.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    log_a, log_b = (pd.read_csv(r / "log.csv").drop(columns=list(TIMING_COLUMNS)) for r in (a, b))  # minus clock/machine
    pd.testing.assert_frame_equal(log_a, log_b)
    assert len(log_a) == cfg.epochs
    da = load_checkpoint(a / "checkpoints" / "latest.pt")["decoder"]
    db = load_checkpoint(b / "checkpoints" / "latest.pt")["decoder"]
    assert all(torch.equal(da[k], db[k]) for k in da)
    for run in (a, b):  # the seed is recorded with the results
        for name in (RESULTS_FILE, "provenance.json", "config.json", "finished.json"):
            assert json.loads((run / name).read_text())["seed"] == cfg.seed, name


def test_the_seed_matters(smoke_run):
    """Another seed starts from other decoder weights (and draws another patch stream)."""
    from sam3dlib.training.data import stream_seed

    cfg = smoke_run["config"]
    spec = get_spec(cfg.dataset)
    a, b = build_model(cfg, spec).decoder.state_dict(), build_model(cfg.replace(seed=cfg.seed + 1), spec).decoder.state_dict()
    again = build_model(cfg, spec).decoder.state_dict()
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert stream_seed(cfg.seed, 0, 0) != stream_seed(cfg.seed + 1, 0, 0)
