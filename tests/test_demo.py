"""`make demo` (``sam3d demo``): the pipeline on phantoms, with a tiny stand-in budget for speed."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from _fixtures_train import foreground_dice_and_chance

from sam3dlib.study import report
from sam3dlib.study.demo import DEMO_OVERRIDES, demo_config, run_demo


def test_demo_config_is_table1_vit_b_cached():
    cfg = demo_config(seed=3)
    assert (cfg.name, cfg.encoder, cfg.encoder_mode, cfg.device, cfg.seed) == ("table1_synapse", "vit_b", "cached", "cpu", 3)
    assert cfg.encoder_weights is None and cfg.patch_size == DEMO_OVERRIDES["patch_size"]


def test_demo_writes_table_and_figures(tmp_path):
    # the demo's code path with a vit_tiny stand-in and two epochs (the real demo: `make demo`)
    result = run_demo(tmp_path / "demo", seed=0, encoder_weights=tmp_path / "absent.pth", cache_root=tmp_path / "cache",
                      encoder="vit_tiny", epochs=3, iterations_per_epoch=6, val_iterations=1, val_every=1)
    out = tmp_path / "demo"
    assert {"table1.csv", "table1.md", "table1.html", "overlays.png", "dsc_bars.png", "demo.json"} <= {p.name for p in out.iterdir()}
    table = pd.read_csv(out / "table1.csv", dtype={"table": str})
    assert list(table.columns) == report.ALL_COLUMNS
    ours = table[table["method"] == "SAM3D (this run)"]
    assert set(ours["data"]) == {"phantom"} and set(ours["encoder_weights"]) == {"random init"}
    assert "STAND-IN RUN: random-init vit_tiny encoder, phantom data" in (out / "table1.md").read_text()
    record = json.loads((out / "demo.json").read_text())
    assert record["mean_foreground_dsc"] == pytest.approx(result.mean_dsc, abs=1e-4) and record["seconds"] > 0
    assert "mean foreground DSC" in result.message()
    # learning shows even with the random stand-in encoder: every test case above twice chance (a random
    # prediction with the case's foreground rate)
    store = json.loads((result.run_dir / "provenance.json").read_text())["data_dir"]
    scores = foreground_dice_and_chance(result.run_dir, store)
    assert scores and all(dice > 2 * chance for dice, chance in scores), scores
