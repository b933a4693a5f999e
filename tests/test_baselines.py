"""The paper's baselines retrained under SAM3D's protocol: MONAI's networks as configured, trained by
the same trainer, in the tables; the wall-clock budget that stops any model."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch
from _fixtures_train import BASELINE_CROPS, BASELINE_OVERRIDES, baseline_params, foreground_dice_and_chance, tiny_config

from sam3dlib.config import ConfigError
from sam3dlib.data.specs import get_spec
from sam3dlib.modeling.baselines import plan_dynunet
from sam3dlib.modeling.factory import build_model
from sam3dlib.modeling.models import MODELS
from sam3dlib.study import report
from sam3dlib.study.registry import get_config
from sam3dlib.training import train


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _monai_direct(model: str) -> torch.nn.Module:
    """Each baseline written out with MONAI's constructor (Synapse: 1 channel, 14 classes, smoke crop)."""
    from monai.networks.nets import UNETR, DynUNet, SwinUNETR

    if model == "unetr":  # the UNETR paper's configuration at the 16 x 48 x 48 crop
        return UNETR(in_channels=1, out_channels=14, img_size=(16, 48, 48), feature_size=16, hidden_size=768,
                     mlp_dim=3072, num_heads=12, proj_type="perceptron", norm_name="instance", res_block=True)
    if model == "nnunet":  # nnU-Net's plan for 8 x 48 x 48 at 3 x 0.76 x 0.76 mm
        strides = [(1, 1, 1), (1, 2, 2), (2, 2, 2), (1, 2, 2)]
        return DynUNet(3, 1, 14, kernel_size=[(1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)], strides=strides,
                       upsample_kernel_size=strides[1:], filters=[32, 64, 128, 256], deep_supervision=True,
                       deep_supr_num=1)
    return SwinUNETR(in_channels=1, out_channels=14, feature_size=48)


@pytest.mark.parametrize("model", ["unetr", "nnunet", "swinunetr"])
def test_parameter_counts_equal_monai_constructor(model):
    cfg = get_config("table1_synapse", "smoke", model=model)
    built = build_model(cfg, get_spec("synapse"))
    assert built.encoder is None and cfg.encoder_mode == "online"  # the volume is the input: nothing cached
    assert built.trainable_parameters() == _count(_monai_direct(model)) == _count(built.decoder)
    assert built.trainable_parameters() == _count(built)  # nothing frozen


def test_nnunet_plan_follows_spacing_and_crop():
    spec = get_spec("synapse")
    plan = plan_dynunet(spec.patch_size, spec.target_spacing)  # 64 x 176 x 176 at 3 x 0.76 x 0.76 mm
    assert plan.strides == ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))  # 176 -> 11: odd, stops
    assert plan.kernel_sizes[0] == (1, 3, 3) and set(plan.kernel_sizes[1:]) == {(3, 3, 3)}  # in-plane first
    assert plan.filters == (32, 64, 128, 256, 320) and plan.deep_supr_num == 2
    iso = plan_dynunet((64, 64, 64), (1.0, 1.0, 1.0))
    assert iso.strides[1:] == ((2, 2, 2),) * 4 and iso.filters[-1] == 320
    wide = plan_dynunet((128, 128, 128), (1.0, 1.0, 1.0))
    assert wide.filters == (32, 64, 128, 256, 320, 320)  # capped at 320
    with pytest.raises(ValueError, match="at least 2"):
        plan_dynunet((4, 6, 6), None)


def test_model_settings_are_checked():
    assert get_config("table1_synapse", "smoke", model="unetr").patch_size == (16, 48, 48)  # rounded up to 16
    assert get_config("table1_synapse", "smoke", model="swinunetr").patch_size == (32, 64, 64)
    assert get_config("table1_synapse", "smoke").patch_size == (8, 48, 48)  # SAM3D's crop unchanged
    with pytest.raises(ConfigError, match="multiple of 16"):
        get_config("table1_synapse", "smoke", model="unetr", patch_size=(8, 48, 48))  # a given crop is kept
    with pytest.raises(ConfigError, match="single voxel"):
        get_config("table1_synapse", "smoke", model="swinunetr", patch_size=(32, 32, 32))
    with pytest.raises(ConfigError, match="unknown model|one of"):
        get_config("table1_synapse", "smoke", model="unet")
    with pytest.raises(ConfigError, match="no encoder"):
        get_config("table1_synapse", "smoke", model="nnunet", encoder_weights="x.pth")
    with pytest.raises(ConfigError, match="time_budget_s"):
        get_config("table1_synapse", "smoke", time_budget_s=0)
    assert set(MODELS) == {"sam3d", "unetr", "nnunet", "swinunetr"}


#: the transformers' smoke budget: SGD at 0.01 moves them slower than the convolutional DynUNet
TRANSFORMER_OVERRIDES = {"epochs": 4, "iterations_per_epoch": 6, "val_iterations": 1}
#: their smallest crops (Swin UNETR: sides of 32, one of 64; a step at 32 x 64 x 64 took 19 s on one thread)
TRANSFORMER_CROPS = {"unetr": BASELINE_CROPS["unetr"], "swinunetr": (32, 32, 64)}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["unetr", "swinunetr"])
def test_transformer_baselines_learn_above_chance(model, synapse_store, tmp_path, one_thread):
    """UNETR and Swin UNETR trained by the same trainer on the phantoms: the loss falls and every test
    case's foreground Dice is above chance (a random prediction with the case's foreground rate)."""
    from sam3dlib.pipeline import run_experiment
    from sam3dlib.study.seed_runs import experiment_config

    cfg = experiment_config("table1_synapse", baseline_params(model, overrides={
        **TRANSFORMER_OVERRIDES, "patch_size": TRANSFORMER_CROPS[model]}), 0, model)
    run = run_experiment(cfg, synapse_store, tmp_path / model, progress=False)
    log = pd.read_csv(run / "log.csv")
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0], log
    scores = foreground_dice_and_chance(run, synapse_store)
    assert len(scores) == 2 and all(dice > chance for dice, chance in scores), scores
    assert json.loads((run / "finished.json").read_text())["model"] == model


@pytest.mark.slow
@pytest.mark.parametrize("model", ["nnunet"])  # the transformers: above chance with more steps (test above)
def test_baseline_smoke_training_learns(model, baseline_run, synapse_store):
    run = baseline_run(model)
    log = pd.read_csv(run / "log.csv")
    assert len(log) == BASELINE_OVERRIDES["epochs"] and (log["steps"] == BASELINE_OVERRIDES["iterations_per_epoch"]).all()
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    scores = foreground_dice_and_chance(run, synapse_store)  # above chance: twice a random prediction's Dice
    assert len(scores) == 2 and all(dice > 2 * chance for dice, chance in scores), scores
    done = json.loads((run / "finished.json").read_text())
    prov = json.loads((run / "provenance.json").read_text())
    assert done["model"] == prov["model"] == model and prov["encoder"] == "none"
    assert done["trainable_parameters"] == prov["trainable_parameters"] > 1_000_000
    assert done["steps"] == 12 and done["seconds_per_step"] > 0 and done["peak_memory_gib"] > 0
    assert done["stopped_by"] == "epochs"


def test_time_budget_stops_training_cleanly(synapse_store, tmp_path, one_thread):
    cfg = tiny_config(epochs=200, iterations_per_epoch=4, time_budget_s=1.0, cache_dir=str(tmp_path / "cache"))
    run = train(cfg, synapse_store, tmp_path / "run", progress=False)
    done = json.loads((run / "finished.json").read_text())
    log = pd.read_csv(run / "log.csv")
    assert done["stopped_by"] == "time_budget_s" and done["time_budget_s"] == 1.0
    assert 1 <= done["epochs_done"] == len(log) < 200 and done["steps"] == log["steps"].sum() >= 1
    assert 1.0 <= done["train_seconds"] < 60
    assert pd.notna(log["val_dice"].iloc[-1])  # the last (cut) epoch was validated
    assert (run / "checkpoints" / "latest.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert train(cfg, synapse_store, tmp_path / "run", resume=True, progress=False) == run  # finished: nothing to do
    assert len(pd.read_csv(run / "log.csv")) == len(log)


def test_poly_schedule_runs_on_the_time_budget():
    """With time_budget_s the poly rate (per step or per epoch) follows whichever ends first."""
    from sam3dlib.training.optim import poly_decay, poly_lr, poly_step_lr

    cfg = get_config("table1_synapse", "smoke", epochs=2, iterations_per_epoch=10, lr=0.01, poly_per_step=True,
                     time_budget_s=100)
    assert poly_step_lr(cfg, 5, seconds=50) == pytest.approx(poly_decay(0.01, 1, 2, cfg.poly_power))  # budget half spent
    assert poly_step_lr(cfg, 10, seconds=1) == pytest.approx(poly_decay(0.01, 10, 20, cfg.poly_power))  # steps ahead
    assert poly_step_lr(cfg, 1, seconds=250) == 0.0  # the budget is spent: no further descent
    free = get_config("table1_synapse", "smoke", epochs=2, iterations_per_epoch=10, lr=0.01)
    assert poly_step_lr(free, 5, seconds=1e6) == pytest.approx(poly_decay(0.01, 5, 20, free.poly_power))
    epochs = get_config("table1_synapse", "smoke", epochs=10, lr=0.01, time_budget_s=100)  # per-epoch schedule
    assert poly_lr(epochs, 1, seconds=50) == pytest.approx(poly_decay(0.01, 5, 10, epochs.poly_power))
    assert poly_lr(epochs, 6, seconds=50) == pytest.approx(poly_decay(0.01, 6, 10, epochs.poly_power))
    assert poly_lr(free, 1, seconds=1e6) == pytest.approx(poly_decay(0.01, 1, 2, free.poly_power))


def test_table_renders_baseline_rows(baseline_run, synapse_store, tmp_path):
    """A Table 1 run with models=["nnunet"] (the session's run is reused, not retrained) and a UNETR row."""
    from sam3dlib.study.table_run import run_table

    data = tmp_path / "data"
    data.mkdir()
    os.symlink(synapse_store, data / "synapse")
    out = tmp_path / "table"
    run = baseline_run("nnunet")
    import shutil

    shutil.copytree(run, out / "experiments" / "table1_synapse-nnunet-seed0")
    result = run_table(1, baseline_params("nnunet", data_dir=str(data), out_dir=str(out)), figures=False)
    table = result.tables[0]
    assert "nnUNet (this run)" in table.values.index and "SAM3D (this run)" not in table.values.index
    params = json.loads((run / "finished.json").read_text())["trainable_parameters"]
    assert table.values.at["nnUNet (this run)", "Params (M)"] == pytest.approx(round(params / 1e6, 2))
    assert list(result.cost["method"]) == ["nnUNet"] and result.cost["seconds_per_step"].iloc[0] > 0
    md = (out / "table1.md").read_text()
    assert "| nnUNet (this run) |" in md and "Training cost" in md and (out / "table1_cost.csv").is_file()

    summary = pd.read_csv(run / "summary.csv")  # a UNETR row beside the paper's UNETR, with the difference
    cond = report.RunConditions("none", "none", "phantom", "smoke", "paper")
    rows = report.our_rows(summary, get_spec("synapse"), cond, table="1", method="UNETR", params_m=92.64)
    assert "no encoder" in report.comparison_table("1", rows).caption
    sam3d = report.our_rows(summary, get_spec("synapse"), report.RunConditions("vit_tiny", "random init", "phantom",
                                                                             "smoke", "paper"), table="1")
    t1 = report.comparison_table("1", pd.concat([sam3d, rows], ignore_index=True))
    diff = "difference (UNETR: this run − paper)"
    assert diff in t1.values.index
    assert t1.values.at[diff, "DSC avg"] == pytest.approx(t1.values.at["UNETR (this run)", "DSC avg"] - 78.35)
    assert "UNETR (this run): retrained from scratch" in t1.caption and "vit_tiny" in t1.caption
