"""Shared fixtures. Heavy artefacts (an official-format random SAM checkpoint) are made once."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Session-wide fixtures of the training tests (one prepared phantom store, one smoke run).
from _fixtures_train import baseline_run, one_thread, smoke_run, synapse_store  # noqa: F401,E402

from sam3dlib.modeling.encoders import save_random_sam_weights


@pytest.fixture(scope="session")
def sam_vit_b_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised SAM ViT-B saved in the official ``sam_vit_b_01ec64.pth`` format."""
    return save_random_sam_weights(tmp_path_factory.mktemp("ckpt") / "sam_vit_b_random.pth", "vit_b", seed=0)


@pytest.fixture(scope="session")
def sam_vit_tiny_checkpoint(tmp_path_factory) -> Path:
    return save_random_sam_weights(tmp_path_factory.mktemp("ckpt") / "sam_vit_tiny_random.pth", "vit_tiny", seed=0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
