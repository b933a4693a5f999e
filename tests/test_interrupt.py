"""Interruption: a real ``sam3d train`` subprocess is killed with SIGKILL at a seeded random point and
resumed with ``--resume``; the final decoder weights equal those of an uninterrupted run with the
same seed, and no half-written checkpoint, cache entry or results file is ever visible."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sam3dlib.cli import main
from sam3dlib.modeling.run_checkpoint import load_checkpoint

#: a training killed and resumed in child processes: long, so `make test-long`
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: the session's smoke run (tests/_fixtures_train.py) is the uninterrupted reference: the same settings
SETTINGS = {"epochs": 3, "iterations_per_epoch": 8}
EPOCHS = SETTINGS["epochs"]
#: seeds the kill time (the same point on every run; change it to probe other points)
KILL_SEED = 0
#: the subprocess: one torch thread (as the in-process reference), then the real CLI
CHILD = "import sys, torch; torch.set_num_threads(1); from sam3dlib.cli import main; sys.exit(main(sys.argv[1:]))"


def _argv(store: Path, out: Path, cache: Path | None) -> list[str]:
    argv = ["train", "table1_synapse", "--profile", "smoke", "--data", str(store), "--out", str(out),
            "--no-evaluate", "--no-progress"]
    if cache is not None:
        argv += ["--set", f"cache_dir={cache}"]
    for k, v in SETTINGS.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _epochs_logged(run: Path) -> pd.DataFrame | None:
    try:
        log = pd.read_csv(run / "log.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return log if len(log) else None


def _assert_nothing_half_written(run: Path, cache: Path) -> None:
    """Every visible (non-temporary) file is complete: checkpoints load, JSON parses, arrays load."""
    for ck in (run / "checkpoints").glob("*.pt"):
        state = load_checkpoint(ck)  # raises on a truncated file
        assert state["epoch"] >= 1
    for js in list(run.glob("*.json")) + list(cache.rglob("*.json")):
        if not js.name.startswith("."):
            json.loads(js.read_text())
    for npy in cache.rglob("*.npy"):
        if not npy.name.startswith("."):
            np.load(npy, mmap_mode="r")
    if (run / "log.csv").is_file():
        pd.read_csv(run / "log.csv")


@pytest.fixture(scope="module")
def reference(smoke_run, synapse_store):
    """The uninterrupted run the killed-and-resumed one must equal: the session's smoke run (in-process,
    one thread, the same settings; its feature cache is the store's default one)."""
    cfg = smoke_run["config"]
    assert {k: getattr(cfg, k) for k in SETTINGS} == SETTINGS and cfg.cache_dir is None
    run = smoke_run["run"]
    return {"cache": synapse_store / "feature_cache", "state": load_checkpoint(run / "checkpoints" / "latest.pt"),
            "run": run}


@pytest.mark.parametrize("when", ["after an epoch", "at start"])
def test_sigkill_then_resume_equals_uninterrupted(reference, synapse_store, tmp_path, one_thread, when):
    rng = random.Random(f"{KILL_SEED}-{when}")  # a fixed point per case, so a failure can be rerun; printed on failure
    # "at start" uses its own cache folder so the kill can land while features are being encoded
    own_cache = None if when == "after an epoch" else tmp_path / "cache"
    cache = reference["cache"] if own_cache is None else own_cache
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *_argv(synapse_store, run, own_cache)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        if when == "after an epoch":
            while (log := _epochs_logged(run)) is None:  # epoch 1 is checkpointed before it is logged
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() - t0 < 120, "training did not log an epoch in 120 s"
                time.sleep(0.05)
            delay = rng.uniform(0, 1.2 * float(log["seconds"].iloc[0]))
        else:
            delay = rng.uniform(3.0, 6.0)  # importing torch takes ~3 s; then the cache is built
        time.sleep(delay)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    logged = _epochs_logged(run)
    point = (f"killed {delay:.2f} s after {when} (KILL_SEED {KILL_SEED}; log: {0 if logged is None else len(logged)} "
             "epochs)")
    if when == "after an epoch":
        assert killed and proc.returncode == -signal.SIGKILL, f"the run finished before the kill ({point})"
    _assert_nothing_half_written(run, cache)

    assert main(_argv(synapse_store, run, own_cache) + ["--resume"]) == 0, point
    resumed = load_checkpoint(run / "checkpoints" / "latest.pt")
    ref = reference["state"]
    assert resumed["epoch"] == ref["epoch"] == EPOCHS, point
    for key, value in ref["decoder"].items():
        assert torch.equal(value, resumed["decoder"][key]), f"{key} differs ({point})"
    assert [r["train_loss"] for r in resumed["history"]] == [r["train_loss"] for r in ref["history"]], point
    assert (run / "finished.json").is_file()
    leftovers = [p for p in list(run.rglob("*.tmp")) + list(cache.rglob("*.tmp"))]
    assert not leftovers, f"temporary files left after resuming: {leftovers} ({point})"
    _assert_nothing_half_written(run, cache)
