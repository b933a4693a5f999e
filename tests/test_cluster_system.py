"""The study grid on a real SLURM: a one-node cluster on 127.0.0.1 (``make test-system``).

Two jobs (Table 1, smoke profile, seeds 0 and 1, phantoms) go through ``sam3d reproduce
--launcher slurm`` as the README says; one of them is requeued with ``scontrol requeue`` after
its first epoch, must say in its log that it resumed, and the rendered table must equal that of
a local run of the same grid. Takes a few minutes on two cores (two trainings, one notebook
render per run).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from slurm_cluster import PARTITION, daemon_logs, one_node_slurm

from sam3dlib.study.phantom_data import ensure_phantom_data

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]
SAM3D = [sys.executable, "-m", "sam3dlib"]


def _reproduce(data: Path, out: Path, *extra: str) -> list[str]:
    return [*SAM3D, "reproduce", "1", "--profile", "smoke", "--data-dir", os.fspath(data), "--seeds", "0 1",
            "--out", os.fspath(out), *extra]


def _env(base: dict) -> dict:
    # one thread per training in both runs (the jobs get it from SLURM_CPUS_PER_TASK), the checkout's code
    return {**base, "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg", "PYTHONPATH": os.fspath(REPO)}


def _wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None, poll_s: float = 0.1):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the submitter exited ({proc.returncode}) before {what}")
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _epochs_logged(run: Path) -> int:
    try:
        return max(len((run / "log.csv").read_text().splitlines()) - 1, 0)
    except OSError:
        return 0


def test_two_job_grid_requeued_resumes_and_equals_local_run(tmp_path):
    # "small" phantoms: the test prediction after the last epoch outlasts KillWait on an idle machine, so the
    # requeue lands while the job still runs
    data = ensure_phantom_data("synapse", tmp_path / "cache", size="small")
    config = tmp_path / "cluster.toml"
    config.write_text(f'partition = "{PARTITION}"\ngpus_per_job = 0\ncpus_per_job = 1\nmem_gb = 1\ntime_min = 30\n'
                      'poll_s = 1\n')
    with one_node_slurm() as slurm_env:
        env = _env(slurm_env)
        out = tmp_path / "slurm"
        log = (tmp_path / "submitter.log").open("w")
        proc = subprocess.Popen(_reproduce(data, out, "--launcher", "slurm", "--cluster-config", os.fspath(config)),
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            jobs_json = _wait_for(lambda: next(out.glob("runs/*/jobs/jobs.json"), None), 300, "the jobs' record", proc)
            run = jobs_json.parents[1] / "experiments" / "table1_synapse-seed0"
            _wait_for(lambda: _epochs_logged(run) >= 1, 600, "seed 0's first epoch", proc)
            job_id = json.loads(jobs_json.read_text())["table1_synapse-seed0"]["job_id"]
            requeue = subprocess.run(["scontrol", "requeue", job_id], env=env, capture_output=True, text=True)
            assert requeue.returncode == 0, requeue.stderr
            assert _epochs_logged(run) < 2, "seed 0 finished its training before the requeue; the test needs a slower run"
            proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        output = (tmp_path / "submitter.log").read_text()
        assert proc.returncode == 0, output[-3000:] + daemon_logs(slurm_env)
        record = json.loads(jobs_json.read_text())["table1_synapse-seed0"]
        job_log = Path(record["stdout"]).read_text()
        assert "table1_synapse-seed0: starting in" in job_log  # the first attempt
        resumed = re.search(r"table1_synapse-seed0: resuming .* after epoch (\d+) of 2", job_log)
        assert resumed and int(resumed.group(1)) >= 1, job_log[-3000:]
        status = subprocess.run([*SAM3D, "status", os.fspath(out)], cwd=REPO, env=env, capture_output=True, text=True)
        assert status.returncode == 0 and "2 done" in status.stdout, status.stdout + status.stderr

    local = tmp_path / "local"
    ref = subprocess.run(_reproduce(data, local), cwd=REPO, env=_env(os.environ), capture_output=True, text=True,
                         timeout=900)
    assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-2000:]
    ours = pd.read_csv((out / "latest" / "table1.csv"), dtype=str)
    theirs = pd.read_csv((local / "latest" / "table1.csv"), dtype=str)
    pd.testing.assert_frame_equal(ours, theirs)
    pd.testing.assert_frame_equal(pd.read_csv(out / "latest" / "per_case.csv"), pd.read_csv(local / "latest" / "per_case.csv"))
