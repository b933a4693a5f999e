"""One process owns a folder for its life: a lock file that a crashed process does not leave stuck.

``<folder>/.sam3d.lock`` holds who owns the folder (host, pid, the process's start time, when it
took the folder, its command line) and is locked with ``flock`` while the owner lives. Two rules
decide whether a folder is free:

1. the kernel's lock: ``flock`` is released by the kernel when the owner exits, however it exits
   (also SIGKILL, out-of-memory kill). On a network file system Linux maps ``flock`` to the
   server's POSIX locks (NFSv3 lockd, NFSv4, Lustre/BeeGFS/GPFS when mounted with locking), so two
   hosts sharing the folder see each other's lock;
2. the record, for file systems that do not lock (``flock`` succeeds for everyone or is
   unsupported): a record of a process on this host that is still running (same pid *and* same
   start time, so a reused pid does not count) holds the folder. A record of another host cannot
   be checked from here and is trusted to the lock alone.

The file is not deleted (deleting a lock file while another process opens it lets both "own"
it); on release its content is cleared. The one exception: a folder that :func:`acquire` created
and that holds nothing else on release (the call failed before writing) is removed again. A process may take the same folder again while it holds it
(nested holds count).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sam3dlib.utils.errors import UserInputError

#: the lock file's name inside the owned folder
LOCK_FILE = ".sam3d.lock"

#: folders this process holds: absolute path -> [file descriptor, nesting count, created by us (0/1)]
_HELD: dict[str, list[int]] = {}


class FolderInUseError(UserInputError, BlockingIOError):
    """Another live process owns the folder; the message names it (host, pid, command, since when)."""


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` on this host as the kernel counts it (clock ticks since
    boot, field 22 of ``/proc/PID/stat``), or None where ``/proc`` is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holder_is_alive(record: dict) -> bool:
    """Whether the process a lock record names is still running (only checkable on this host).

    A record of another host counts as dead: there, the kernel's lock is the only evidence.
    """
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    pid = record["pid"]
    if not _alive(pid):
        return False
    started = record.get("process_start")
    return started is None or process_start_time(pid) in (None, started)


def describe_holder(record: dict) -> str:
    """``pid 123 on host h (sam3d train ..., since 2026-01-01T10:00:00Z)`` for a lock record."""
    if not record:
        return "another process (it left no record)"
    command = record.get("command") or "?"
    return (f"pid {record.get('pid')} on host {record.get('host')} ({command}, since {record.get('since')})")


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 1 << 16, 0)
        record = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _own_record() -> dict:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": process_start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(argv)[:300]}


def _refuse(folder: Path, record: dict, what: str) -> FolderInUseError:
    return FolderInUseError(f"{what} {folder} is in use by {describe_holder(record)}; wait until it ends or "
                            f"choose another folder (a process that died frees it: {folder / LOCK_FILE})")


def acquire(folder: str | os.PathLike, what: str = "folder") -> None:
    """Take ``folder`` (created if absent) for this process; nested calls count.

    Raises:
        FolderInUseError: another live process holds it (one line naming the holder).
        OutputError / OSError: the lock file cannot be created.
    """
    import fcntl

    folder = Path(os.path.abspath(folder))
    key = str(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _refuse(folder, _read(fd), what) from None
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # the file system does not lock: the record alone decides (rule 2)
        record = _read(fd)
        if record and record.get("pid") != os.getpid() and holder_is_alive(record):
            raise _refuse(folder, record, what)
        data = json.dumps(_own_record()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = [fd, 1, int(created)]


def release(folder: str | os.PathLike) -> None:
    """Give ``folder`` back (after the last nested :func:`acquire`): clear the record, unlock."""
    key = str(Path(os.path.abspath(folder)))
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[key]
    fd, folder = held[0], Path(key)
    try:
        os.ftruncate(fd, 0)
        if held[2] and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink()  # a call that failed before writing anything leaves no folder
            folder.rmdir()
    except OSError:
        pass  # the folder was removed or the disk is gone: the kernel's lock still goes with close
    finally:
        os.close(fd)


def holds(folder: str | os.PathLike) -> bool:
    """Whether this process holds ``folder``."""
    return str(Path(os.path.abspath(folder))) in _HELD


@contextmanager
def hold(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """``with hold(run, "run folder (--out)"):`` own ``run`` for the block (see :func:`acquire`)."""
    acquire(folder, what)
    try:
        yield Path(folder)
    finally:
        release(folder)


__all__ = ["LOCK_FILE", "FolderInUseError", "acquire", "describe_holder", "hold", "holds", "release"]
