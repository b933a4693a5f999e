"""Prepared phantom stores for the notebooks' defaults, built once per code version and reused."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sam3dlib.utils.fileio import atomic_write_text


def _phantom_key(dataset: str, seed: int, n_cases: int | None, size: str) -> str:
    from sam3dlib.data import phantoms, preprocess

    h = hashlib.sha256()
    for mod in (phantoms, preprocess):
        h.update(Path(mod.__file__).read_bytes())
    return f"{dataset}-{size}-n{n_cases or 'default'}-seed{seed}-{h.hexdigest()[:10]}"


def default_cache_root() -> Path:
    """``~/.cache/sam3dlib/phantoms`` (phantom stores are built once per code version)."""
    return Path.home() / ".cache" / "sam3dlib" / "phantoms"


def phantom_size_for(profile: str) -> str:
    """Phantom size used by a profile: ``tiny`` (16 x 48 x 48) for smoke, ``small`` otherwise."""
    return "tiny" if profile == "smoke" else "small"


def phantom_data_dir(dataset: str, cache_root: str | os.PathLike | None = None, seed: int = 0,
                     n_cases: int | None = None, size: str = "small") -> Path:
    """Where :func:`ensure_phantom_data` keeps this phantom store (nothing is built)."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return root / _phantom_key(dataset, seed, n_cases, size)


def ensure_phantom_data(
    dataset: str,
    cache_root: str | os.PathLike | None = None,
    seed: int = 0,
    n_cases: int | None = None,
    size: str = "small",
) -> Path:
    """A prepared phantom store of ``dataset``, built once and reused.

    Returns:
        A data folder ``D`` with ``D/<dataset>/dataset.json`` (pass ``D`` as ``data_dir``).
    """
    from sam3dlib.data.phantoms import write_phantom
    from sam3dlib.data.prepare import prepare_dataset

    data_dir = phantom_data_dir(dataset, cache_root, seed, n_cases, size)
    target = data_dir / dataset
    if (target / "dataset.json").is_file() and (data_dir / "READY").is_file():
        return data_dir
    # the raw files stay where they are written: the store's properties point at them (the
    # evaluation scores against the original label files, as the authors' scripts do)
    raw = write_phantom(dataset, data_dir / "raw", n_cases=n_cases, seed=seed, size=size)
    tmp = data_dir / f".{dataset}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    prepare_dataset(dataset, raw, tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    atomic_write_text(data_dir / "READY", "phantom\n")
    return data_dir


__all__ = ["default_cache_root", "ensure_phantom_data", "phantom_data_dir", "phantom_size_for"]
