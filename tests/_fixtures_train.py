"""Fixtures of the training tests: one tiny prepared phantom store per session, one smoke run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sam3dlib.study.registry import get_config

#: session-wide results (fixtures imported into several modules are defined once per module)
_MEMO: dict[str, object] = {}


@pytest.fixture(scope="session")
def synapse_store(tmp_path_factory) -> Path:
    """A prepared 4-case Synapse phantom (16 x 48 x 48 voxels; 2 train, 2 test cases)."""
    from sam3dlib.data.phantoms import write_phantom
    from sam3dlib.data.prepare import prepare_dataset

    if "store" in _MEMO:
        return _MEMO["store"]
    root = tmp_path_factory.mktemp("synapse_phantom")
    raw = write_phantom("synapse", root / "raw", n_cases=4, size="tiny")
    prepare_dataset("synapse", raw, root / "store")
    _MEMO["store"] = root / "store"
    return root / "store"


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine, 2 threads contend and run far slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(**overrides):
    """The smoke config with an even smaller budget (a few seconds)."""
    values = dict(epochs=2, iterations_per_epoch=2, val_iterations=1, patch_size=(8, 32, 32))
    values.update(overrides)
    return get_config("table1_synapse", "smoke", **values)


@pytest.fixture(scope="session")
def smoke_run(synapse_store, tmp_path_factory) -> dict:
    """A cached-mode smoke experiment (train + test evaluation) long enough to learn something."""
    import time

    from sam3dlib.pipeline import run_experiment

    if "smoke" in _MEMO:
        return _MEMO["smoke"]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("runs") / "smoke"
        cfg = get_config("table1_synapse", "smoke", epochs=3, iterations_per_epoch=8)
        t0 = time.perf_counter()
        run_experiment(cfg, synapse_store, out, progress=False)
        _MEMO["smoke"] = {"run": out, "seconds": time.perf_counter() - t0, "config": cfg}
        return _MEMO["smoke"]
    finally:
        torch.set_num_threads(n)


def copy_store(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns("feature_cache"))
    return dest
