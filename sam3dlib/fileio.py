"""Crash-safe file writing: write to a temporary file in the target folder, fsync, rename.

A reader never sees a half-written checkpoint, cache entry or results file: either the old
file or the complete new one exists. Errors (disk full, read-only folder) name the path.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class OutputError(OSError):
    """An output file could not be written; the message names the file and the reason."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
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
            raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary file that atomically becomes ``path``."""
    with atomic_open(path, "wb" if binary else "w") as fh:
        write(fh)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), binary=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    def write(fh: IO) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        fh.write(buffer.getbuffer())

    return atomic_write(path, write)


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    import numpy as np

    return atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))
