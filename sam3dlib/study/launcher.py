"""A table's job grid on a SLURM cluster through ``submitit``: submit, requeue, resume, watch.

Each experiment x seed of a table (:func:`sam3dlib.study.grid.table_jobs`) is one SLURM job
(``submitit.AutoExecutor``) that runs :func:`sam3dlib.study.grid.run_job`. What the submitter
knows about its jobs is kept in ``<table run>/jobs/jobs.json`` (:data:`RECORDS`, written
atomically): each job's SLURM id, its log files and its run folder. A job's state
(:func:`grid_states`) comes from the run folder first (``done``: finished and scored), then from
the scheduler's queue (``pending``, ``running``), else ``failed`` (submitted, no longer queued,
not done) or ``missing`` (never submitted). :func:`submit_grid` submits only the ``missing``
and ``failed`` jobs, so a rerun resubmits what is left and nothing twice.

**Preemption and time limits.** The job's callable is a ``submitit.helpers.Checkpointable``:
at its time limit SLURM sends the signal submitit asks for (``USR2``, ``signal_delay_s`` before
the end); submitit calls :meth:`GridTask.checkpoint`, which logs where the run will resume and
hands back the same job, and submitit requeues it (at most ``max_timeouts`` times). A job that
is preempted or requeued (``scontrol requeue``) starts again in the same way. Either way the run
continues from ``checkpoints/latest.pt`` (written after every epoch, so at most the epoch in
progress is redone; resuming gives the same weights as an uninterrupted run), and the job's log,
appended across attempts, says ``resuming ... after epoch k``. The run folder is the trainer's to
guard: one process holds it at a time.

``executor = "local"`` in the settings runs the same jobs as processes of this machine
(submitit's local executor: no scheduler, for trying a grid and for the tests).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sam3dlib.study.grid import GridJob, run_job
from sam3dlib.utils import values
from sam3dlib.utils.errors import UserInputError
from sam3dlib.utils.fileio import atomic_write_json

#: the submitter's record of its jobs, inside the table run's jobs folder
RECORDS = "jobs.json"
#: the jobs folder of a table run (submitit's pickles and the jobs' logs, one sub-folder per job)
JOBS_DIR = "jobs"
#: job states, in the order ``sam3d status`` lists them
STATES = ("done", "running", "pending", "failed", "missing")
#: squeue states that mean "waiting for a node" / "on a node"
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}


class ClusterConfigError(UserInputError, ValueError):
    """A job setting (flag, cluster config file or notebook parameter ``cluster``) is wrong."""


class GridFailedError(UserInputError, RuntimeError):
    """Some jobs of the grid failed; the message names each with its log and last error line."""


@dataclass(frozen=True)
class ClusterSettings:
    """What every job of a grid asks the scheduler for.

    Attributes:
        partition: SLURM partition (None: the cluster's default).
        gpus_per_job: GPUs of one job (one training per GPU, as nnU-Net advises).
        cpus_per_job: CPU cores of one job (data loading, augmentation).
        mem_gb: host memory of one job (GB).
        time_min: the job's time limit in minutes; a job that reaches it is requeued and resumes.
        max_timeouts: how often one job may be requeued after reaching its time limit.
        signal_delay_s: seconds before the time limit at which the job is told to stop.
        sbatch: further ``sbatch`` options, name -> value (``{"account": "lab", "qos": "high"}``).
        setup: shell lines run before the job (``module load cuda``, ``source env/bin/activate``).
        executor: ``slurm``, or ``local`` (jobs as processes of this machine, no scheduler).
        poll_s: seconds between two looks at the queue while waiting.
    """

    partition: str | None = None
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    mem_gb: float = 32.0
    time_min: int = 24 * 60
    max_timeouts: int = 20
    signal_delay_s: int = 120
    sbatch: dict[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    executor: str = "slurm"
    poll_s: float = 30.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], where: str = "cluster settings") -> ClusterSettings:
        """Check and coerce ``raw`` (flags, a config file's table, the notebook's ``cluster``).

        Raises:
            ClusterConfigError: an unknown name or a bad value, naming ``where``, the setting and the fault.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ClusterConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")

        def at(name: str) -> str:
            return f"{where}: {name}"

        out: dict[str, Any] = {}
        for name, value in raw.items():
            if value is None and name != "partition":
                continue
            if name == "partition":
                out[name] = None if value in (None, "") else str(value)
            elif name in ("gpus_per_job", "max_timeouts", "signal_delay_s", "cpus_per_job", "time_min"):
                out[name] = values.as_int(value, at(name), ClusterConfigError)
                if out[name] < (1 if name in ("cpus_per_job", "time_min") else 0):
                    raise values.fail(at(name), value, "at least 1" if name in ("cpus_per_job", "time_min")
                                      else "0 or more", ClusterConfigError)
            elif name in ("mem_gb", "poll_s"):
                out[name] = values.as_float(value, at(name), ClusterConfigError)
                if not out[name] > 0:
                    raise values.fail(at(name), value, "a positive number", ClusterConfigError)
            elif name == "sbatch":
                out[name] = _sbatch_options(value, at(name))
            elif name == "setup":
                if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                    raise ClusterConfigError(f"{at(name)}: expected a list of shell lines, got {value!r}")
                out[name] = tuple(value)
            elif name == "executor":
                out[name] = values.as_choice(value, ("slurm", "local"), at(name), ClusterConfigError)
        return cls(**out)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["setup"] = list(self.setup)
        return d


def _sbatch_options(value: Any, where: str) -> dict[str, str]:
    """``{"account": "lab"}`` or ``["account=lab", "exclusive"]`` -> ``{"account": "lab", "exclusive": ""}``."""
    if isinstance(value, Mapping):
        items = [(str(k), "" if v is True else str(v)) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(s.split("=", 1)[0], s.split("=", 1)[1] if "=" in s else "") for s in map(str, value)]
    else:
        raise ClusterConfigError(f"{where}: expected NAME=VALUE items, got {value!r}")
    out = {}
    for k, v in items:
        k = k.strip().lstrip("-")
        if not k or any(c.isspace() for c in k):
            raise ClusterConfigError(f"{where}: bad sbatch option name {k!r} (give e.g. account=lab or qos=high)")
        out[k] = v.strip()
    return out


def load_settings(config_file: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> ClusterSettings:
    """Settings from a TOML file (top-level keys or a ``[slurm]`` table), then ``overrides`` (flags).

    Raises:
        ClusterConfigError: the file is missing, is not TOML, or holds a bad setting.
    """
    raw: dict[str, Any] = {}
    where = "cluster settings"
    if config_file is not None:
        path = Path(config_file)
        where = f"--cluster-config {path}"
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterConfigError(f"{where}: no such file") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ClusterConfigError(f"{where}: not a readable TOML file ({exc})") from None
        raw = dict(data.get("slurm", data))
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ClusterSettings.from_mapping(raw, where)


def executor_parameters(settings: ClusterSettings, name: str) -> dict[str, Any]:
    """``submitit.AutoExecutor.update_parameters`` arguments of one job (``slurm_*`` ones only apply on SLURM)."""
    params: dict[str, Any] = {"name": name, "timeout_min": settings.time_min, "cpus_per_task": settings.cpus_per_job,
                              "mem_gb": settings.mem_gb, "gpus_per_node": settings.gpus_per_job, "nodes": 1,
                              "tasks_per_node": 1, "slurm_signal_delay_s": settings.signal_delay_s}
    params.update({f"slurm_{k}": v for k, v in _optional_slurm_options(settings).items()})
    return params


def _optional_slurm_options(settings: ClusterSettings) -> dict[str, Any]:
    """Partition, extra ``sbatch`` options and setup lines, where given (submitit's SLURM names, unprefixed)."""
    options: dict[str, Any] = {}
    if settings.partition:
        options["partition"] = settings.partition
    if settings.sbatch:
        options["additional_parameters"] = {k: (v if v != "" else True) for k, v in settings.sbatch.items()}
    if settings.setup:
        options["setup"] = list(settings.setup)
    return options


def sbatch_script(settings: ClusterSettings, job: GridJob, jobs_dir: str | os.PathLike) -> str:
    """The ``sbatch`` file submitit writes for ``job`` (shown by ``--dry-run``; needs no scheduler)."""
    from submitit.slurm.slurm import _convert_mem, _make_sbatch_string

    params: dict[str, Any] = dict(job_name=job.name, time=settings.time_min, cpus_per_task=settings.cpus_per_job,
                                  mem=_convert_mem(settings.mem_gb), gpus_per_node=settings.gpus_per_job, nodes=1,
                                  ntasks_per_node=1, signal_delay_s=settings.signal_delay_s)
    params.update(_optional_slurm_options(settings))
    folder = Path(jobs_dir) / job.name
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(os.fspath(folder))])
    return _make_sbatch_string(command=command, folder=folder, **params)


class GridTask:
    """The callable a job runs: :func:`run_job`, checkpointable so that submitit requeues it."""

    def __call__(self, job: GridJob) -> str:
        _threads_from_slurm()
        return run_job(job)

    def checkpoint(self, job: GridJob) -> Any:
        """Called by submitit at the time limit or on preemption: log where the job resumes, requeue it."""
        from submitit.helpers import DelayedSubmission

        from sam3dlib.study.grid import epochs_logged

        print(f"{job.name}: interrupted (time limit or preemption) after epoch {epochs_logged(job.run_dir)}; "
              "requeued, it resumes from its last checkpoint", flush=True)
        return DelayedSubmission(self, job)


def _threads_from_slurm() -> None:
    """One torch thread per CPU SLURM gave the job (torch would otherwise count the node's cores)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))


# ------------------------------------------------------------------ records and states
def read_records(jobs_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``jobs.json`` of a jobs folder (empty when there is none)."""
    import json

    try:
        return dict(json.loads((Path(jobs_dir) / RECORDS).read_text()))
    except (OSError, ValueError):
        return {}


def _write_records(jobs_dir: Path, records: Mapping[str, Any]) -> None:
    jobs_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(jobs_dir / RECORDS, dict(records))


def _slurm_queue() -> dict[str, str]:
    """Job id -> squeue state of this user's jobs (empty when squeue cannot be run)."""
    try:
        out = subprocess.run(["squeue", "--me", "-h", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


def _local_queue(ids: Iterable[str]) -> dict[str, str]:
    """Job id (a controller's pid) -> RUNNING for the local executor's live controllers."""
    alive = {}
    for jid in ids:
        try:
            stat = Path(f"/proc/{int(jid)}/stat").read_text()
        except (OSError, ValueError):
            continue
        if stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
            alive[jid] = "RUNNING"
    return alive


def queue_states(records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Scheduler state of every recorded job that is still queued or running (job id -> state)."""
    local = [r["job_id"] for r in records.values() if r.get("executor") == "local"]
    queue = _local_queue(local) if local else {}
    if any(r.get("executor", "slurm") == "slurm" for r in records.values()):
        queue.update(_slurm_queue())
    return queue


def job_state(run_dir: str | os.PathLike, record: Mapping[str, Any] | None, queue: Mapping[str, str]) -> str:
    """``done`` (run finished and scored), ``pending``/``running`` (queued), ``failed`` or ``missing``."""
    from sam3dlib.pipeline import is_scored

    if is_scored(run_dir):
        return "done"
    if not record:
        return "missing"
    state = queue.get(str(record.get("job_id")))
    if state is None:
        return "failed"
    return "pending" if state.split()[0] in _PENDING else "running"


def grid_states(jobs: Sequence[GridJob], jobs_dir: str | os.PathLike) -> dict[str, str]:
    """Job name -> state (:func:`job_state`) of every job of ``jobs``."""
    records = read_records(jobs_dir)
    queue = queue_states(records)
    return {j.name: job_state(j.run_dir, records.get(j.name), queue) for j in jobs}


def last_error_line(record: Mapping[str, Any]) -> str:
    """The last non-empty line of a job's error log (its exception), or ``""``."""
    for key in ("stderr", "stdout"):
        try:
            lines = [ln.strip() for ln in Path(record.get(key, "")).read_text(errors="replace").splitlines()]
        except (OSError, TypeError):
            continue
        lines = [ln for ln in lines if ln and not ln.startswith("submitit ")]
        if lines:
            return lines[-1]
    return ""


# ------------------------------------------------------------------ submit and wait
def submit_grid(jobs: Sequence[GridJob], settings: ClusterSettings, jobs_dir: str | os.PathLike) -> list[str]:
    """Submit every job that is ``missing`` or ``failed`` (one submitit job each); returns their names.

    Jobs that are done, pending or running are left alone, so a rerun submits only what is left.
    """
    import submitit

    jobs_dir = Path(jobs_dir).resolve()
    records = read_records(jobs_dir)
    states = grid_states(jobs, jobs_dir)
    submitted = []
    for job in jobs:
        if states[job.name] not in ("missing", "failed"):
            continue
        executor = submitit.AutoExecutor(folder=jobs_dir / job.name, cluster=settings.executor,
                                         slurm_max_num_timeout=settings.max_timeouts,
                                         local_max_num_timeout=settings.max_timeouts)
        executor.update_parameters(**executor_parameters(settings, job.name))
        handle = executor.submit(GridTask(), job)
        records[job.name] = {
            "job_id": str(handle.job_id), "executor": settings.executor, "run_dir": job.run_dir,
            "stdout": os.fspath(handle.paths.stdout), "stderr": os.fspath(handle.paths.stderr),
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"), "attempt": int(records.get(job.name, {}).get("attempt", 0)) + 1,
        }
        _write_records(jobs_dir, records)
        submitted.append(job.name)
        print(f"submitted {job.name}: job {handle.job_id}, log {handle.paths.stdout}", flush=True)
    return submitted


def wait_for_grid(jobs: Sequence[GridJob], jobs_dir: str | os.PathLike, poll_s: float = 30.0,
                  timeout_s: float | None = None) -> dict[str, str]:
    """Wait until no job is pending or running; print each change of state. Returns the final states.

    Raises:
        TimeoutError: ``timeout_s`` passed first.
    """
    start, seen = time.monotonic(), {}
    while True:
        states = grid_states(jobs, jobs_dir)
        changed = {k: v for k, v in states.items() if seen.get(k) != v}
        if changed:
            counts = {s: sum(v == s for v in states.values()) for s in STATES if s in states.values()}
            print(f"[{time.strftime('%H:%M:%S')}] " + ", ".join(f"{k}: {v}" for k, v in changed.items())
                  + "  (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")", flush=True)
            seen = states
        if not any(v in ("pending", "running") for v in states.values()):
            return states
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"jobs still queued after {timeout_s:.0f} s: "
                               + ", ".join(k for k, v in states.items() if v in ("pending", "running")))
        time.sleep(poll_s)


def failure_report(names: Iterable[str], jobs_dir: str | os.PathLike) -> str:
    """One line per failed job: its name, log file and the last line of its error."""
    records = read_records(jobs_dir)
    lines = []
    for name in names:
        r = records.get(name, {})
        lines.append(f"  {name} (job {r.get('job_id', '?')}): log {r.get('stderr', '?')}: {last_error_line(r) or 'no error line'}")
    return "\n".join(lines)


def run_grid(jobs: Sequence[GridJob], settings: ClusterSettings, jobs_dir: str | os.PathLike,
             wait: bool = True, timeout_s: float | None = None) -> dict[str, str]:
    """Submit what is missing or failed, then (``wait``) wait for every job.

    Raises:
        GridFailedError: after waiting, some jobs failed (each named with its log and error line).
    """
    submit_grid(jobs, settings, jobs_dir)
    if not wait:
        return grid_states(jobs, jobs_dir)
    states = wait_for_grid(jobs, jobs_dir, settings.poll_s, timeout_s)
    failed = [k for k, v in states.items() if v != "done"]
    if failed:
        raise GridFailedError(f"{len(failed)} of {len(jobs)} jobs failed; rerun the same command to resubmit them:\n"
                              + failure_report(failed, jobs_dir))
    return states


def status_rows(jobs: Sequence[GridJob], jobs_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Each job's state, job id, log file and (failed) the last line of its error, for ``sam3d status``.

    ``jobs`` is the grid; jobs recorded in ``jobs.json`` but not in ``jobs`` are listed too.
    """
    records = read_records(jobs_dir)
    queue = queue_states(records)
    runs = {j.name: j.run_dir for j in jobs}
    for name, r in records.items():
        runs.setdefault(name, r.get("run_dir", ""))
    rows = []
    for name, run_dir in runs.items():
        r = records.get(name)
        state = job_state(run_dir, r, queue)
        rows.append({"job": name, "state": state, "id": str((r or {}).get("job_id", "-")),
                     "log": str((r or {}).get("stdout", "-")),
                     "error": last_error_line(r) if (r and state == "failed") else ""})
    return rows


def format_status(rows: Sequence[Mapping[str, str]]) -> str:
    """``sam3d status``'s table: job, state, SLURM id, log, last error line."""
    head = {"job": "job", "state": "state", "id": "job id", "log": "log"}
    widths = {k: max(len(str(r[k])) for r in [head, *rows]) for k in head}
    lines = ["  ".join(str(r[k]).ljust(widths[k]) for k in head).rstrip() for r in [head, *rows]]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['job']} failed: {r['error']}")
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)


def grid_plan(jobs: Sequence[GridJob], settings: ClusterSettings | None, jobs_dir: str | os.PathLike,
              tflops: float | None = None) -> str:
    """``--dry-run``: the job grid, each job's state and expected GPU-hours and memory, and the sbatch lines.

    The estimate is :func:`sam3dlib.study.estimate.estimate_run` (measured epochs of a started run,
    else the stated model at ``tflops``). ``settings`` None: the grid of a local run (no sbatch lines).
    """
    from sam3dlib.data.specs import get_spec
    from sam3dlib.study.estimate import ASSUMED_TFLOPS, estimate_run
    from sam3dlib.study.seed_runs import experiment_config

    states = grid_states(jobs, jobs_dir)
    rows, hours = [], 0.0
    for job in jobs:
        cfg = experiment_config(job.config, job.notebook_params(), job.seed)
        est = estimate_run(cfg, get_spec(cfg.dataset), job.run_dir, tflops or ASSUMED_TFLOPS)
        todo = states[job.name] in ("missing", "failed")
        hours += est.gpu_hours if todo else 0.0
        rows.append((job.name, states[job.name] + (" -> submit" if todo and settings else ""), f"{est.steps}",
                     f"{est.gpu_hours:.2f}", f"{est.memory_gb:.1f}", est.basis))
    head = ("job", "state", "steps", "GPU-h", "mem GB", "estimate")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"{len(jobs)} jobs (experiment x seed), run folders under {Path(jobs[0].run_dir).parent}" if jobs else "no jobs"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    todo_n = sum(states[j.name] in ("missing", "failed") for j in jobs)
    lines.append(f"to run: {todo_n} jobs, {hours:.2f} GPU-hours expected")
    if settings is not None and jobs:
        lines.append(f"sbatch file of each job (shown for {jobs[0].name}; the others differ in name and folder):")
        lines += ["    " + ln for ln in sbatch_script(settings, jobs[0], jobs_dir).splitlines() if ln.strip()]
    return "\n".join(lines)


__all__ = ["JOBS_DIR", "RECORDS", "STATES", "ClusterConfigError", "ClusterSettings", "GridFailedError", "GridTask",
           "executor_parameters", "failure_report", "format_status", "grid_plan", "status_rows", "grid_states", "job_state", "last_error_line", "load_settings",
           "queue_states", "read_records", "run_grid", "sbatch_script", "submit_grid", "wait_for_grid"]
