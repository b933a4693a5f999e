"""Verified, resumable downloads that never leave a half-written file under the target's name.

:func:`download` fetches a URL into ``<target>.part``, resuming a previous partial transfer with
an HTTP ``Range`` request, checks the whole file's md5 (and sha256 when known) and only then
renames it to ``target``. A file whose checksum differs (corrupted, or truncated yet complete
by the server's account) is deleted and refused. A transfer that stops early (connection lost)
keeps ``<target>.part`` so that the next call resumes it; nothing is ever at ``target`` unless
verified. :func:`install_file` does the same for a file the user fetched by hand (``--from``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sam3dlib.utils.errors import UserInputError

CHUNK = 1 << 20


class DownloadError(UserInputError, OSError):
    """A download that failed or did not verify; the message names the URL/file and what to do."""


def part_path(target: Path) -> Path:
    """Where an unfinished download of ``target`` is kept."""
    return target.with_name(target.name + ".part")


def digests(path: str | os.PathLike) -> dict[str, str]:
    """md5 and sha256 of a file, one read."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            md5.update(block)
            sha.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def check_digests(path: Path, md5: str | None, sha256: str | None, what: str) -> dict[str, str]:
    """The file's digests; DownloadError naming both values when one differs from the expected."""
    got = digests(path)
    for name, want in (("md5", md5), ("sha256", sha256)):
        if want and got[name] != want.lower():
            raise DownloadError(f"{what}: {name} {got[name]} differs from the expected {want}: the file is "
                                "corrupted or incomplete and was not kept")
    return got


def _open(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - addresses come from fixed tables


def _transfer(url: str, part: Path, timeout: float, progress: Callable[[int, int | None], None] | None) -> None:
    """Append the remaining bytes of ``url`` to ``part`` (resuming when the server honours ``Range``)."""
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part is complete (checked next)
            return
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: cannot connect ({exc}); run the same command again to retry") from exc
    with resp:
        resumed = start and resp.status == 206
        length = resp.headers.get("Content-Length")
        total = (int(length) + (start if resumed else 0)) if length else None
        done = start if resumed else 0
        with open(part, "ab" if resumed else "wb") as fh:
            try:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    fh.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
            except (OSError, urllib.error.URLError) as exc:  # includes http.client.IncompleteRead
                raise DownloadError(f"{url}: transfer stopped at {done} bytes ({type(exc).__name__}); {part.name} "
                                    "is kept: run the same command again to resume") from exc
    if total is not None and done < total:
        raise DownloadError(f"{url}: transfer stopped at {done} of {total} bytes; {part.name} is kept: run the same "
                            "command again to resume")


def download(url: str, target: str | os.PathLike, md5: str | None = None, sha256: str | None = None,
             timeout: float = 60.0, progress: Callable[[int, int | None], None] | None = None) -> dict[str, str]:
    """Fetch ``url`` to ``target``, verified; return its ``{"md5", "sha256"}``.

    An existing verified ``target`` is kept (no transfer). At least one checksum is required.

    Raises:
        DownloadError: connection or HTTP failure (a partial ``.part`` is kept for resuming), or a
            checksum mismatch (nothing kept).
    """
    if not (md5 or sha256):
        raise ValueError("download needs an md5 or sha256 to verify against")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        return check_digests(target, md5, sha256, os.fspath(target))
    part = part_path(target)
    _transfer(url, part, timeout, progress)
    try:
        got = check_digests(part, md5, sha256, f"{url} -> {target}")
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return got


def install_file(source: str | os.PathLike, target: str | os.PathLike, md5: str | None = None,
                 sha256: str | None = None) -> dict[str, str]:
    """Copy a hand-fetched file to ``target`` after verifying it (through a ``.part`` file)."""
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise DownloadError(f"--from {source}: no such file")
    got = check_digests(source, md5, sha256, f"--from {source}")
    if source.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        part = part_path(target)
        shutil.copyfile(source, part)
        os.replace(part, target)
    return got


__all__ = ["DownloadError", "check_digests", "digests", "download", "install_file", "part_path"]
