"""Renamed spellings stop with one line naming the new one; run folders written before still load."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sam3dlib.cli import main as cli_main
from sam3dlib.config import ConfigError, ExperimentConfig, parse_overrides
from sam3dlib.study.notebook_params import ParameterError, from_namespace
from sam3dlib.study.registry import get_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, new", [
    (["predict", "--run", "r", "-i", "x.nii.gz", "-o", "y.nii.gz", "--checkpoint", "latest"], "--which best|latest"),
    (["demo", "--checkpoint", "sam.pth"], "--encoder-weights FILE"),
    (["reproduce", "1", "--checkpoint", "sam.pth"], "--encoder-weights FILE"),
])
def test_old_cli_flags_stop_with_one_line(argv, new, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err == f"sam3d {argv[0]}: error: --checkpoint was renamed: use {new}"


def test_new_cli_flags_parse():
    from sam3dlib.cli import build_parser

    args = build_parser().parse_args(["predict", "--run", "r", "-i", "x.nii.gz", "-o", "y.nii.gz", "--which", "latest"])
    assert args.which == "latest"
    args = build_parser().parse_args(["reproduce", "1", "--encoder-weights", "w.pth"])
    assert args.encoder_weights == "w.pth"


def test_old_config_key_in_overrides_names_the_new_one():
    with pytest.raises(ConfigError, match=r"'sam_checkpoint' was renamed: use encoder_weights="):
        parse_overrides(["sam_checkpoint=sam.pth"], "table1_synapse")
    with pytest.raises(ConfigError, match="renamed: use encoder_weights"):
        get_config("table1_synapse", "smoke", sam_checkpoint="sam.pth")
    with pytest.raises(ConfigError, match="leave it unset"):
        get_config("table1_synapse", "smoke", encoder_weights="pretrained")


@pytest.mark.parametrize("old, expected", [
    ({"sam_checkpoint": "/w/sam_vit_b_01ec64.pth", "encoder_weights": "pretrained"}, "/w/sam_vit_b_01ec64.pth"),
    ({"sam_checkpoint": None, "encoder_weights": "pretrained"}, None),
    ({"sam_checkpoint": None, "encoder_weights": "random"}, "random"),
    ({"sam_checkpoint": "/w/sam.pth"}, "/w/sam.pth"),
])
def test_saved_config_of_an_older_run_loads(tmp_path, old, expected):
    values = get_config("table2_acdc", "smoke").to_dict()
    values.pop("encoder_weights")
    (tmp_path / "config.json").write_text(json.dumps({**values, **old}))
    cfg = ExperimentConfig.load(tmp_path / "config.json")
    assert cfg.encoder_weights == expected
    assert "sam_checkpoint" not in cfg.to_dict()


def test_old_notebook_parameter_names_the_new_one():
    with pytest.raises(ParameterError, match="'sam_checkpoint' was renamed: use encoder_weights"):
        from_namespace({"sam_checkpoint": "sam.pth", "profile": "smoke"})
    assert from_namespace({"sam_checkpoint": None, "encoder_weights": "random"}).encoder_weights == "random"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_old_make_variable_names_the_new_one():
    done = subprocess.run(["make", "-n", "-o", ".venv/.installed", "reproduce-table1", "SAM_CHECKPOINT=x.pth"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "SAM_CHECKPOINT was renamed: use ENCODER_WEIGHTS=x.pth" in done.stderr
    done = subprocess.run(["make", "-n", "-o", ".venv/.installed", "reproduce-table1", "ENCODER_WEIGHTS=x.pth"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--encoder-weights \"x.pth\"" in done.stdout
