"""Device names: one rule (``auto``, ``cpu``, ``cuda``, ``cuda:N``) for configs, notebooks and the CLI."""
from __future__ import annotations

import pytest
import torch

from sam3dlib.study.notebook_params import NotebookParams, ParameterError
from sam3dlib.study.registry import get_config
from sam3dlib.study.seed_runs import experiment_config
from sam3dlib.utils.devices import parse_device, resolve_device
from sam3dlib.utils.errors import ConfigError


@pytest.mark.parametrize("name, expected", [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"), (" cuda:1 ", "cuda:1")])
def test_parse_device_accepts(name, expected):
    assert parse_device(name) == expected


@pytest.mark.parametrize("name", ["tpu", "cuda:", "cuda:x", "cuda1", "", None, 0, "cpu:0"])
def test_parse_device_refuses(name):
    with pytest.raises(ConfigError, match="unknown device"):
        parse_device(name)


def test_every_entry_point_uses_the_rule():
    assert get_config("table1_synapse", "smoke", device="cuda:1").device == "cuda:1"
    assert NotebookParams.from_mapping({"device": "cuda:2"}).device == "cuda:2"
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        get_config("table1_synapse", "smoke", device="gpu")
    with pytest.raises(ParameterError, match="unknown device 'gpu'"):
        NotebookParams.from_mapping({"device": "gpu"})


def test_reproduce_keeps_the_gpu_index():
    """A table run's experiments get ``cuda:N`` as given (the index was dropped before)."""
    cfg = experiment_config("table1_synapse", NotebookParams.from_mapping({"device": "cuda:3"}), seed=0)
    assert cfg.device == "cuda:3"


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda:0")
