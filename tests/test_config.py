"""Experiment configs: registry, profiles, overrides and their error messages."""
from __future__ import annotations

import pytest

from sam3dlib.config import ExperimentConfig, parse_overrides
from sam3dlib.study.registry import EXPERIMENTS, get_config

# name -> (dataset, patch and batch of the authors' code, skip, batch_dice); ACDC's depth 16 is the code's (the paper says 14)
PAPER = {
    "table1_synapse": ("synapse", (64, 176, 176), 2, True, True),
    "table2_acdc": ("acdc", (16, 160, 160), 4, True, False),
    "table3_lung": ("lung", (34, 192, 192), 2, True, True),
    "table4_brats": ("brats", (64, 64, 64), 2, True, False),
    "table5_synapse_noskip": ("synapse", (64, 176, 176), 2, False, True),
    "table5_acdc_noskip": ("acdc", (16, 160, 160), 4, False, False),
}


def test_registry_covers_every_table():
    assert set(EXPERIMENTS) == set(PAPER)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_profile_is_the_papers_code(name):
    dataset, patch, batch, skip, batch_dice = PAPER[name]
    c = get_config(name, "paper")
    assert (c.dataset, c.patch_size, c.batch_size, c.skip, c.batch_dice) == (dataset, patch, batch, skip, batch_dice)
    assert (c.epochs, c.iterations_per_epoch, c.val_iterations) == (1000, 250, 50)
    assert (c.lr, c.momentum, c.nesterov, c.weight_decay, c.poly_power, c.grad_clip) == (1e-2, 0.99, True, 3e-5, 0.9, 12.0)
    assert c.deep_supervision and c.encoder == "vit_b" and c.encoder_mode == "online" and c.protocol == "paper"


@pytest.mark.parametrize("profile, epochs, mode, encoder", [
    ("paper", 1000, "online", "vit_b"), ("quick", 50, "cached", "vit_b"), ("smoke", 2, "cached", "vit_tiny")])
def test_profiles(profile, epochs, mode, encoder):
    c = get_config("table2_acdc", profile)
    assert (c.epochs, c.encoder_mode, c.encoder, c.profile) == (epochs, mode, encoder, profile)


def test_acdc_depth_14_selectable():
    assert get_config("table2_acdc", "paper", patch_size=(14, 160, 160)).patch_size == (14, 160, 160)


@pytest.mark.parametrize("overrides, message", [
    ({"lrr": 0.1}, "unknown setting 'lrr' for table1_synapse; did you mean 'lr'?"),
    ({"epochs": "many"}, "setting 'epochs' for table1_synapse must be an integer"),
    ({"skip": 3}, "setting 'skip' for table1_synapse must be true/false"),
    ({"encoder_mode": "lazy"}, "must be one of online, cached"),
    ({"patch_size": (8, 40, 48)}, "multiples of 16"),
    ({"patch_size": (8, 48)}, "must be 3 integers"),
    ({"dataset": "acdc"}, "fixed by the experiment"),
    ({"epochs": 0}, "epochs must be >= 1"),
])
def test_bad_overrides_name_the_setting(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        get_config("table1_synapse", "smoke", **overrides)


def test_unknown_name_and_profile():
    with pytest.raises(ValueError, match="did you mean 'table1_synapse'"):
        get_config("table1_synaps")
    with pytest.raises(ValueError, match="unknown profile"):
        get_config("table1_synapse", "fast")


def test_parse_overrides_types():
    got = parse_overrides(["lr=0.005", "patch_size=16,96,96", "encoder_weights=none", "skip=false", "epochs=3",
                           "encoder_mode=online"], "table1_synapse")
    assert got == {"lr": 0.005, "patch_size": (16, 96, 96), "encoder_weights": None, "skip": False, "epochs": 3,
                   "encoder_mode": "online"}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["lr"])


def test_json_round_trip(tmp_path):
    """Through a real ``config.json`` (tuples come back as lists), with a non-default in every kind of field."""
    c = get_config("table4_brats", "quick", seed=3, encoder_weights="sam.pth", cache_stride=(32, 32), skip=False,
                   lr=5e-3, device="cuda:1")
    (tmp_path / "config.json").write_text(c.to_json())
    back = ExperimentConfig.load(tmp_path / "config.json")
    assert back == c and isinstance(back.patch_size, tuple) and isinstance(back.cache_stride, tuple)
    assert back.to_dict() == c.to_dict() and back.device == "cuda:1"


def test_profiles_differ_only_where_documented():
    """``paper`` is the dataclass's defaults for the budget; quick and smoke change only their own settings."""
    paper, quick, smoke = (get_config("table1_synapse", p).to_dict() for p in ("paper", "quick", "smoke"))
    changed = lambda other: {k for k in paper if paper[k] != other[k]} - {"profile"}  # noqa: E731
    assert changed(quick) == {"epochs", "encoder_mode", "val_every"}
    assert changed(smoke) == {"encoder", "patch_size", "epochs", "iterations_per_epoch", "val_iterations",
                              "encoder_mode", "num_workers", "device", "mirror_tta"}
