"""nnU-Net's inference options: ``--no-mirror`` and ``--step-size`` in the CLI, the Python API and
the notebooks' parameters reach the sliding window; bad values are one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3dlib.cli import main
from sam3dlib.data.store import PreparedDataset
from sam3dlib.inference import sliding_window
from sam3dlib.inference.predictor import load_run, predict_file
from sam3dlib.study.notebook_params import NotebookParams, ParameterError
from sam3dlib.utils.errors import ConfigError


@pytest.fixture
def recorded(monkeypatch) -> list[dict]:
    """Replace the sliding window by a recorder that returns uniform probabilities."""
    calls: list[dict] = []

    def fake(predictor, image, patch_size, **kwargs):
        calls.append(dict(kwargs, patch_size=patch_size))
        k = 14  # the smoke run is a Synapse run
        return torch.full((k, *np.shape(image)[1:]), 1.0 / k)

    monkeypatch.setattr(sliding_window, "sliding_window_predict", fake)
    return calls


def _scan(store_dir) -> str:
    store = PreparedDataset(store_dir)
    return store.properties(list(store.split("paper").test)[0])["image_files"][0]


def test_cli_no_mirror_and_step_size(smoke_run, synapse_store, tmp_path, recorded):
    run, src = str(smoke_run["run"]), _scan(synapse_store)
    assert main(["predict", "--run", run, "-i", src, "-o", str(tmp_path / "a.nii.gz"), "--device", "cpu",
                 "--no-mirror", "--step-size", "0.75", "--no-progress"]) == 0
    assert recorded[-1]["mirror_axes"] is None and recorded[-1]["overlap"] == pytest.approx(0.25)
    assert main(["predict", "--run", run, "-i", src, "-o", str(tmp_path / "b.nii.gz"), "--device", "cpu",
                 "--no-progress"]) == 0
    cfg = load_run(run, "cpu").config  # without the flags: the run's own settings
    assert recorded[-1]["overlap"] == cfg.sw_overlap
    assert recorded[-1]["mirror_axes"] == ((0, 1, 2) if cfg.mirror_tta else None)


def test_python_api_options(smoke_run, synapse_store, tmp_path, recorded):
    loaded = load_run(smoke_run["run"], "cpu")
    predict_file(loaded, _scan(synapse_store), tmp_path / "m.nii.gz", mirror=True, step_size=1.0)
    assert recorded[-1]["mirror_axes"] == (0, 1, 2) and recorded[-1]["overlap"] == 0.0
    assert loaded.mirror is None  # the loaded run itself is unchanged
    with pytest.raises(ConfigError, match=r"--step-size must be in \(0, 1\]"):
        loaded.with_options(step_size=0)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.5"])
def test_cli_bad_step_size_is_one_line(smoke_run, tmp_path, capsys, value):
    src = tmp_path / "x.nii.gz"
    src.write_bytes(b"")
    assert main(["predict", "--run", str(smoke_run["run"]), "-i", str(src), "-o", str(tmp_path / "o.nii.gz"),
                 "--step-size", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--step-size must be in (0, 1]" in err[0] and value in err[0]


def test_notebook_parameters_mirror_and_step_size():
    p = NotebookParams.from_mapping({"mirror": "false", "step_size": "0.25"})
    assert (p.mirror, p.step_size) == (False, 0.25)
    assert p.inference_overrides() == {"mirror_tta": False, "sw_overlap": 0.75}
    assert NotebookParams.from_mapping({}).inference_overrides() == {}
    with pytest.raises(ParameterError, match="step_size"):
        NotebookParams.from_mapping({"step_size": 2})
    with pytest.raises(ParameterError, match="mirror"):
        NotebookParams.from_mapping({"mirror": "maybe"})
