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


#: the retrained baselines' smoke budget in the tests (a few steps)
BASELINE_OVERRIDES = {"epochs": 3, "iterations_per_epoch": 4, "val_iterations": 1}
#: a small crop each baseline learns on in a few steps (UNETR: sides of 16; Swin UNETR: 32, not all 32; DynUNet: 2 halvings)
BASELINE_CROPS = {"nnunet": (8, 32, 32), "unetr": (16, 48, 48), "swinunetr": (32, 64, 64)}


def baseline_params(model: str, **values):
    """Notebook parameters that train ``model`` on Table 1 with :data:`BASELINE_OVERRIDES` on its
    :data:`BASELINE_CROPS` crop."""
    from sam3dlib.study.notebook_params import NotebookParams

    overrides = {**BASELINE_OVERRIDES, "patch_size": BASELINE_CROPS[model]}
    return NotebookParams.from_mapping({"models": [model], "overrides": overrides, **values})


@pytest.fixture(scope="session")
def baseline_run(synapse_store, tmp_path_factory):
    """``baseline_run(model)``: the run folder of ``model`` trained and scored once per session on the
    phantom store, with the config a Table 1 notebook gives it (:func:`baseline_params`)."""
    from sam3dlib.pipeline import run_experiment
    from sam3dlib.study.seed_runs import experiment_config

    def get(model: str) -> Path:
        key = f"baseline-{model}"
        if key not in _MEMO:
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                cfg = experiment_config("table1_synapse", baseline_params(model), 0, model)
                out = tmp_path_factory.mktemp("baselines") / model
                run_experiment(cfg, synapse_store, out, progress=False)
                _MEMO[key] = out
            finally:
                torch.set_num_threads(n)
        return _MEMO[key]

    return get


def foreground_dice_and_chance(run: Path, store_root: Path) -> list[tuple[float, float]]:
    """Per predicted test case: (foreground Dice, the Dice of a random prediction with the case's
    true foreground rate, i.e. that rate)."""
    import nibabel as nib
    import numpy as np

    from sam3dlib.data.store import PreparedDataset

    store = PreparedDataset(store_root)
    scores = []
    for pred_path in sorted((Path(run) / "predictions").glob("*.nii.gz")):
        props = store.properties(pred_path.name[: -len(".nii.gz")])
        pred = np.asanyarray(nib.load(pred_path).dataobj) > 0
        gt = np.asanyarray(nib.load(props["label_file"]).dataobj) > 0
        scores.append((float(2 * (pred & gt).sum() / (pred.sum() + gt.sum())), float(gt.mean())))
    return scores


def copy_store(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns("feature_cache"))
    return dest
