"""Multi-process training through torchrun (2 CPU processes, gloo backend)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from sam3dlib.modeling.fingerprint import state_digest
from sam3dlib.modeling.run_checkpoint import load_checkpoint


@pytest.mark.slow
def test_torchrun_two_cpu_processes(synapse_store, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sam3dlib", "train", "table1_synapse", "--data", str(synapse_store), "--out", str(out),
           "--profile", "smoke", "--set", "epochs=1", "--set", "iterations_per_epoch=2", "--set", "val_iterations=2",
           "--set", "patch_size=8,32,32", "--set", f"cache_dir={tmp_path / 'cache'}", "--no-evaluate", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    replicas = json.loads((out / "ddp_replicas.json").read_text())
    hashes = replicas["decoder_sha256_per_rank"]
    assert replicas["world_size"] == 2 and len(hashes) == 2 and hashes[0] == hashes[1]
    ck = load_checkpoint(out / "checkpoints" / "latest.pt")
    from sam3dlib.config import ExperimentConfig
    from sam3dlib.data.specs import get_spec
    from sam3dlib.modeling.factory import build_model

    model = build_model(ExperimentConfig.load(out / "config.json"), get_spec("synapse"))
    model.decoder.load_state_dict(ck["decoder"])
    assert state_digest(model.decoder) == hashes[0]  # the saved weights are the replicas' weights
    assert json.loads((out / "provenance.json").read_text())["world_size"] == 2
    assert len(pd.read_csv(out / "log.csv")) == 1
    # cache building was sharded: both ranks' cases are in the store
    assert len(list((tmp_path / "cache").glob("*/*.json"))) == 4
