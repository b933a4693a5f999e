"""A real one-node SLURM cluster on 127.0.0.1 for the system tests (Debian's ``slurm-wlm`` + ``munge``).

:func:`one_node_slurm` installs the packages with apt-get when they are missing, writes a
``munge`` key and a ``slurm.conf`` into a fresh temporary folder (node ``localhost`` with 2 CPUs,
one partition, no cgroups: ``proctrack/linuxproc``, ``task/none``; state, spool, logs and pid
files all in that folder; free ports), starts ``munged``, ``slurmctld`` and ``slurmd``, waits
until the node is idle and yields the environment a client needs (``SLURM_CONF``). On exit
every job is cancelled and the three daemons are killed by their pids.

Settings that make the tests quick: ``KillWait=2`` (a job told to stop is killed 2 s later) and
``cred_expire=10`` (a requeued job may start again after 11 s instead of 121 s).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PARTITION = "sam3dtest"
DAEMONS = ("munged", "slurmctld", "slurmd")


def ensure_installed() -> None:
    """``apt-get install slurm-wlm munge`` (after ``apt-get update``) unless the daemons are on PATH.

    Raises:
        RuntimeError: they are missing and apt-get failed (the message holds its output's tail).
    """
    if all(shutil.which(d) or Path(f"/usr/sbin/{d}").is_file() for d in DAEMONS):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def write_config(root: Path) -> Path:
    """The munge key and ``slurm.conf`` of a one-node cluster under ``root``; returns the config's path."""
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    ctld_port, slurmd_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=sam3dtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire=10
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
KillWait=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _wait_idle(env: dict, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    out = ""
    while time.monotonic() < end:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env, timeout=30)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0 and out.strip() in ("idle", "mixed", "allocated"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the one-node SLURM did not come up within {timeout_s:.0f} s: sinfo says {out.strip()!r}")


def _kill(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@contextlib.contextmanager
def one_node_slurm() -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd on 127.0.0.1; yield the client environment; stop them all."""
    ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="sam3d-slurm-"))
    conf = write_config(root)
    env = {**os.environ, "SLURM_CONF": os.fspath(conf)}
    started: list[Path] = []
    try:
        munge = root / "munge"
        subprocess.run([_sbin("munged"), f"--key-file={munge / 'munge.key'}", f"--socket={munge / 'munge.sock'}",
                        f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                        f"--seed-file={munge / 'munged.seed'}", "--force"], check=True, env=env, timeout=60)
        started.append(munge / "munged.pid")
        subprocess.run([_sbin("slurmctld"), "-f", os.fspath(conf)], check=True, env=env, timeout=60)
        started.append(root / "slurmctld.pid")
        subprocess.run([_sbin("slurmd"), "-f", os.fspath(conf), "-N", "localhost"], check=True, env=env, timeout=60)
        started.append(root / "slurmd.pid")
        _wait_idle(env)
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--partition", PARTITION], env=env, capture_output=True, timeout=60)
        time.sleep(1)
        for pid_file in reversed(started):
            _kill(pid_file)
        shutil.rmtree(root, ignore_errors=True)


def daemon_logs(env: dict) -> str:
    """The tail of slurmctld's and slurmd's logs (for a failing test's message)."""
    root = Path(env["SLURM_CONF"]).parent
    return "\n".join(f"== {p.name}\n" + p.read_text(errors="replace")[-2000:] for p in sorted((root / "log").glob("*.log")))
