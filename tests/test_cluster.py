"""The study grid as jobs (submitit's local executor, no scheduler), its settings, states, dry run and
estimate, and prediction in parts. The real SLURM is in ``test_cluster_system.py`` (``make test-system``)."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from sam3dlib.cli import main
from sam3dlib.data.specs import get_spec
from sam3dlib.inference.predictor import select_part
from sam3dlib.study.estimate import estimate_run
from sam3dlib.study.grid import GridJob, resume_message, table_jobs
from sam3dlib.study.launcher import (
    ClusterConfigError,
    ClusterSettings,
    GridTask,
    grid_plan,
    job_state,
    load_settings,
    read_records,
    sbatch_script,
    status_rows,
    submit_grid,
    wait_for_grid,
)
from sam3dlib.study.notebook_params import NotebookParams, ParameterError
from sam3dlib.study.registry import experiments, get_config
from sam3dlib.utils.finished import mark_finished

REPO = Path(__file__).resolve().parents[1]


def _jobs(tmp_path: Path, data_dir: Path, seeds=(0, 1), table="1") -> list[GridJob]:
    p = NotebookParams.from_mapping({"profile": "smoke", "seeds": list(seeds), "out_dir": str(tmp_path / "run"),
                                     "data_dir": str(data_dir)})
    return table_jobs(experiments(table), p, {i.dataset: data_dir for i in experiments(table)})


def _scored(run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    mark_finished(run, {"epochs": 2})
    (run / "results.json").write_text("{}")


# ------------------------------------------------------------------ grid and settings
def test_grid_is_experiments_times_seeds_with_one_folder_each(tmp_path):
    jobs = _jobs(tmp_path, tmp_path / "data", seeds=(0, 1, 2), table="5")
    # Table 5: four rows, four experiments (each dataset's skip and no-skip) x 3 seeds
    assert len(jobs) == 12 and len({j.run_dir for j in jobs}) == 12
    assert {j.name for j in jobs} >= {"table2_acdc-seed0", "table5_synapse_noskip-seed2"}
    assert all(Path(j.run_dir).parent == (tmp_path / "run" / "experiments").resolve() for j in jobs)
    assert all(j.params["launcher"] == "local" for j in jobs)  # a job runs its own experiment in-process


def test_settings_from_toml_then_flags_and_errors(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[slurm]\npartition = "gpu"\ngpus_per_job = 2\nsbatch = {account = "lab", exclusive = true}\n')
    s = load_settings(f, {"gpus_per_job": 1, "time_min": 90, "sbatch": None})
    assert (s.partition, s.gpus_per_job, s.time_min, s.sbatch) == ("gpu", 1, 90, {"account": "lab", "exclusive": ""})
    assert load_settings(None, {"sbatch": ["qos=high", "--constraint=a100"]}).sbatch == {"qos": "high", "constraint": "a100"}
    with pytest.raises(ClusterConfigError, match="unknown setting.*gpu_per_job"):
        load_settings(None, {"gpu_per_job": 1})
    with pytest.raises(ClusterConfigError, match="cpus_per_job must be at least 1"):
        load_settings(None, {"cpus_per_job": 0})
    with pytest.raises(ClusterConfigError, match="no such file"):
        load_settings(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("partition = \n")
    with pytest.raises(ClusterConfigError, match="not a readable TOML"):
        load_settings(tmp_path / "bad.toml")
    with pytest.raises(ParameterError, match="'launcher'"):
        NotebookParams.from_mapping({"launcher": "pbs"})


def test_sbatch_lines_carry_the_settings(tmp_path):
    job = _jobs(tmp_path, tmp_path / "data", seeds=(0,))[0]
    s = ClusterSettings.from_mapping({"partition": "gpu", "gpus_per_job": 2, "cpus_per_job": 12, "mem_gb": 64,
                                      "time_min": 600, "sbatch": {"account": "lab"}, "setup": ["module load cuda"]})
    text = sbatch_script(s, job, tmp_path / "jobs")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=12",
                 "#SBATCH --mem=64GB", "#SBATCH --time=600", "#SBATCH --account=lab", "#SBATCH --open-mode=append",
                 f"#SBATCH --job-name={job.name}", "#SBATCH --signal=USR2@120", "module load cuda"):
        assert line in text.splitlines(), line


# ------------------------------------------------------------------ states
def test_job_states_from_run_folder_record_and_queue(tmp_path):
    run = tmp_path / "r"
    assert job_state(run, None, {}) == "missing"
    rec = {"job_id": "7"}
    assert job_state(run, rec, {}) == "failed"  # submitted, no longer queued, not done
    assert job_state(run, rec, {"7": "PENDING"}) == "pending"
    assert job_state(run, rec, {"7": "REQUEUED"}) == "pending"
    assert job_state(run, rec, {"7": "RUNNING"}) == "running"
    mark_finished(run.mkdir() or run, {"epochs": 2})  # trained but not scored: not done
    assert job_state(run, rec, {}) == "failed"
    _scored(run)
    assert job_state(run, rec, {"7": "RUNNING"}) == "done"


def test_resume_message_names_the_epoch(tmp_path):
    job = _jobs(tmp_path, tmp_path / "data", seeds=(0,))[0]
    run = Path(job.run_dir)
    assert resume_message(job) is None
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.pt").write_bytes(b"")
    (run / "log.csv").write_text("epoch,train_loss,val_dice,val_dice_ema,lr,seconds\n1,1.0,,,0.01,3.0\n")
    assert resume_message(job).endswith("from checkpoints/latest.pt after epoch 1 of 2")
    again = GridTask().checkpoint(job)  # submitit's hook: the same callable and job, requeued
    assert isinstance(again.function, GridTask) and again.args == (job,)


# ------------------------------------------------------------------ submit, wait, status (local executor)
def test_only_missing_or_failed_jobs_are_submitted_and_status_shows_the_error(tmp_path, capsys):
    jobs = _jobs(tmp_path, tmp_path / "no_data")  # no store there: a submitted job fails at once
    _scored(Path(jobs[0].run_dir))  # seed 0 is done
    settings = ClusterSettings.from_mapping({"executor": "local", "gpus_per_job": 0, "poll_s": 0.5, "time_min": 5})
    jobs_dir = tmp_path / "run" / "jobs"
    assert submit_grid(jobs, settings, jobs_dir) == ["table1_synapse-seed1"]
    first = read_records(jobs_dir)["table1_synapse-seed1"]
    assert submit_grid(jobs, settings, jobs_dir) == []  # queued: not submitted twice
    states = wait_for_grid(jobs, jobs_dir, poll_s=0.5, timeout_s=240)
    assert states == {"table1_synapse-seed0": "done", "table1_synapse-seed1": "failed"}
    rows = {r["job"]: r for r in status_rows(jobs, jobs_dir)}
    assert rows["table1_synapse-seed1"]["log"] == first["stdout"]
    assert "no_data" in rows["table1_synapse-seed1"]["error"]  # the last line of its error names the folder
    assert submit_grid(jobs, settings, jobs_dir) == ["table1_synapse-seed1"]  # a rerun resubmits the failed one
    again = read_records(jobs_dir)["table1_synapse-seed1"]
    assert again["attempt"] == 2 and again["job_id"] != first["job_id"]
    os.kill(int(again["job_id"]), signal.SIGTERM)  # the local executor's controller: no need to run it again


def test_dry_run_lists_jobs_estimates_and_sbatch_lines(tmp_path):
    jobs = _jobs(tmp_path, tmp_path / "data")
    _scored(Path(jobs[0].run_dir))
    text = grid_plan(jobs, ClusterSettings(partition="gpu"), tmp_path / "run" / "jobs")
    lines = text.splitlines()
    assert lines[0].startswith("2 jobs (experiment x seed)")
    seed0 = next(ln for ln in lines if ln.startswith("table1_synapse-seed0"))
    seed1 = next(ln for ln in lines if ln.startswith("table1_synapse-seed1"))
    assert "done" in seed0 and "missing -> submit" in seed1 and "TFLOP/s assumed" in seed1
    assert "to run: 1 jobs" in text and "#SBATCH --partition=gpu" in text
    assert not (tmp_path / "run" / "jobs").exists()  # a dry run writes nothing


def test_estimate_scales_with_the_work_and_uses_measured_epochs(tmp_path):
    spec = get_spec("synapse")
    paper = estimate_run(get_config("table1_synapse", "paper"), spec)
    half = estimate_run(get_config("table1_synapse", "paper", epochs=500), spec)
    cached = estimate_run(get_config("table1_synapse", "paper", encoder_mode="cached"), spec)
    assert paper.steps == 250_000 and half.steps == 125_000
    assert half.gpu_hours == pytest.approx(paper.gpu_hours / 2, rel=0.01)
    assert cached.gpu_hours < paper.gpu_hours / 3  # online encodes every slice of every step
    assert cached.memory_gb < paper.memory_gb  # no encoder weights on the device
    assert 2.5 < paper.memory_gb < 5  # ~1.06 GB per Synapse sample at the paper's depth (PERFORMANCE.md) x 2 + encoder
    (tmp_path / "log.csv").write_text("epoch,train_loss,val_dice,val_dice_ema,lr,seconds\n1,1,,,0.01,36\n2,1,,,0.01,36\n")
    measured = estimate_run(get_config("table1_synapse", "paper"), spec, tmp_path)
    assert measured.basis.startswith("measured (2 epochs") and measured.steps == 998 * 250
    assert measured.gpu_hours == pytest.approx(998 * 36 / 3600)


def test_reproduce_dry_run_cli(tmp_path, capsys, synapse_store):
    out, data = tmp_path / "results", tmp_path / "data"
    data.mkdir()
    (data / "synapse").symlink_to(synapse_store, target_is_directory=True)
    assert main(["reproduce", "1", "--profile", "smoke", "--data-dir", str(data), "--seeds", "0 1",
                 "--out", str(out), "--launcher", "slurm", "--dry-run", "--partition", "gpu",
                 "--sbatch", "account=lab"]) == 0
    text = capsys.readouterr().out
    assert "table1_synapse-seed0" in text and "table1_synapse-seed1" in text and "#SBATCH --account=lab" in text
    assert not out.exists()
    assert main(["reproduce", "1", "--profile", "smoke", "--data-dir", str(data), "--out", str(out),
                 "--launcher", "slurm", "--cpus-per-job", "0"]) == 2
    assert "cpus_per_job must be at least 1" in capsys.readouterr().err


def test_status_cli(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "no such results folder" in capsys.readouterr().err
    assert main(["status", str(tmp_path)]) == 0
    assert "no cluster jobs" in capsys.readouterr().out


# ------------------------------------------------------------------ prediction in parts
@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_parts_cover_the_folder_without_overlap(n):
    cases = [f"case_{i:03d}" for i in range(n)]
    for k in range(1, 9):
        parts = [select_part(list(reversed(cases)), k, i) for i in range(k)]
        assert sorted(c for p in parts for c in p) == cases  # every case once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert parts == [select_part(cases, k, i) for i in range(k)]  # the same for any listing order


def test_predict_in_parts_writes_each_case_once(smoke_run, synapse_store, tmp_path, capsys):
    from sam3dlib.data.store import PreparedDataset
    from sam3dlib.inference.predictor import load_run, predict_folder

    store = PreparedDataset(synapse_store)
    src = store.properties(store.split("paper").test[0])["image_files"][0]
    (tmp_path / "in").mkdir()
    for name in ("b.nii.gz", "a.nii.gz"):
        shutil.copy(src, tmp_path / "in" / name)
    out = tmp_path / "out"
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(tmp_path / "in"), "-o", str(out),
                 "--device", "cpu", "--no-progress", "--num-parts", "2", "--part-id", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.nii.gz"] and "(part 1 of 2)" in capsys.readouterr().out
    predict_folder(load_run(smoke_run["run"], "cpu"), tmp_path / "in", out, progress=False, num_parts=2, part_id=0)
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "x"),
                 "--num-parts", "2", "--part-id", "2"]) == 2
    assert "--part-id must be an integer in 0..1" in capsys.readouterr().err


def test_a_part_removes_only_its_own_stale_temporaries(tmp_path):
    """K jobs fill one output folder: a job cleaning up must not delete another part's file being written."""
    from sam3dlib.utils.fileio import remove_stale_temps

    mine, theirs = tmp_path / ".a.nii.gz.x1.tmp", tmp_path / ".b.nii.gz.y2.tmp"
    for p in (mine, theirs):
        p.write_bytes(b"half")
    assert remove_stale_temps(tmp_path, targets=["a.nii.gz"]) == [mine]
    assert theirs.exists() and not mine.exists()


def test_an_experiment_folder_held_by_another_process_is_left_alone(tmp_path):
    """A second job (or a local run) on a run folder that a live job holds stops naming it, deleting nothing."""
    import subprocess
    import sys

    from sam3dlib.study.seed_runs import run_seed
    from sam3dlib.utils.folder_lock import FolderInUseError

    job = _jobs(tmp_path, tmp_path / "data", seeds=(0,))[0]
    run = Path(job.run_dir)
    run.mkdir(parents=True)
    (run / "log.csv").write_text("epoch\n")  # the holder's work in progress
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sam3dlib.utils import folder_lock; "
                               f"folder_lock.acquire({str(run)!r}); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=f"in use by .*pid {holder.pid}"):
            run_seed(job.info, job.notebook_params(), Path(job.data_dir), 0, run)
        assert (run / "log.csv").read_text() == "epoch\n"
    finally:
        holder.kill()
        holder.wait()
