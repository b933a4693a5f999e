"""Crash-safe file writing: write to a temporary file in the target folder, fsync, rename.

A reader never sees a half-written checkpoint, cache entry or results file: either the old
file or the complete new one exists. Errors (disk full, read-only folder) name the path.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from sam3dlib.utils.errors import UserInputError

#: temporary files of :func:`atomic_open` are named ``.<target name>.<random>.tmp``
TEMP_SUFFIX = ".tmp"


class OutputError(UserInputError, OSError):
    """An output file could not be written; the message names the file and the reason."""

    def __str__(self) -> str:  # the message alone, without "[Errno N]"
        return self.strerror or super().__str__()


#: what numpy's ``tofile``/``np.save`` says when the disk filled up mid-write (no errno)
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def is_disk_full(exc: OSError) -> bool:
    """ENOSPC, or a short write without an errno (numpy's ``N requested and M written``)."""
    return exc.errno == errno.ENOSPC or (exc.errno is None and bool(_SHORT_WRITE.match(str(exc))))


def _free(path: Path) -> str:
    try:
        st = os.statvfs(path)
    except OSError:
        return "?"
    return f"{st.f_bavail * st.f_frsize / 2**20:.0f} MiB free"


def _reason(exc: OSError, path: Path | None = None) -> str:
    if is_disk_full(exc):
        where = mount_point(path.parent) if path is not None else "device"
        file = f" while writing {path}" if path is not None else ""
        free = f" ({_free(where)})" if path is not None else ""
        return (f"no space left on {where}{free}{file}: the disk is full; free some space or write elsewhere "
                "(the previous version of the file, if any, is unchanged)")
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded (the previous version of the file, if any, is unchanged)"
    if exc.errno == errno.ENOTDIR:
        return "a parent of this path is a file, not a folder"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror or exc}: the folder is not writable"
    return str(exc.strerror or exc)


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Fail early, before any work, when ``path`` cannot become a writable folder.

    Nothing is created. The nearest existing ancestor must be a writable folder and ``path``
    itself, if it exists, a folder.

    Raises:
        OutputError: naming ``what`` and ``path`` and saying what is wrong.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(errno.ENOTDIR, f"cannot write {what} {path}: it exists and is a file, not a folder")
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(errno.ENOTDIR, f"cannot write {what} {path}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(errno.EACCES, f"cannot write {what} {path}: {anc} is not writable")
    return path


def remove_stale_temps(folder: str | os.PathLike, older_than_s: float = 0.0, recursive: bool = False,
                       targets: Iterable[str] | None = None) -> list[Path]:
    """Delete temporary files that a killed writer left in ``folder``; returns those removed.

    A process killed with SIGKILL between creating its temporary file and renaming it cannot
    clean up. The target files themselves are never touched (they are either the old or the
    new complete version). Only call this where no other process is writing at the same time,
    or pass ``older_than_s`` to spare files younger than that, or ``targets`` (file names) to
    remove only the temporaries of those files (what this process alone writes, e.g. its share
    of a folder that several jobs fill).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    if targets is not None:
        found = [p for name in targets for p in folder.glob(f".{glob.escape(name)}.*{TEMP_SUFFIX}")]
    else:
        found = folder.rglob(f".*{TEMP_SUFFIX}") if recursive else folder.glob(f".*{TEMP_SUFFIX}")
    for p in found:
        try:
            if p.is_file() and now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:
            pass
    return removed


def _umask() -> int:
    """The process umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {_reason(exc, path)}") from exc
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(exc.errno or (errno.ENOSPC if is_disk_full(exc) else None),
                              f"cannot write {path}: {_reason(exc, path)}") from exc
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary file that atomically becomes ``path``."""
    with atomic_open(path, "wb" if binary else "w") as fh:
        write(fh)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), binary=False)


def atomic_write_csv(path: str | os.PathLike, table: Any) -> Path:
    """A pandas DataFrame as CSV without its index, atomically."""
    return atomic_write_text(path, table.to_csv(index=False))


def _json_default(o: Any) -> Any:
    """numpy scalars/arrays as numbers/lists; anything else (paths, dates) as its ``str``."""
    if hasattr(o, "tolist") and type(o).__module__ == "numpy":
        return o.tolist()
    return str(o)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys (numpy values as numbers, paths as strings)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike, error: type[Exception], expect: type | None = None) -> Any:
    """The JSON value in ``path``; a missing/unreadable file, invalid JSON or text that is not
    UTF-8 raises ``error`` naming the file (``"<path>: invalid JSON (...)"``).

    Args:
        path: the JSON file.
        error: the :class:`~sam3dlib.utils.errors.UserInputError` subclass to raise.
        expect: ``dict`` or ``list`` to also refuse another top-level type; None accepts any.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if expect is not None and not isinstance(value, expect):
        raise error(f"{path}: expected a JSON {'object' if expect is dict else expect.__name__}, "
                    f"got {type(value).__name__}")
    return value


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    def write(fh: IO) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        fh.write(buffer.getbuffer())

    return atomic_write(path, write)


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    import numpy as np

    return atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))
