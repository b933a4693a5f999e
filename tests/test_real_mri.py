"""Real data: nilearn's MNI152 template at 4 mm. A linear probe on LiteMedSAM's frozen embeddings
separates grey from white matter on slices above the training ones, well above a floor and above
the same network randomly initialised (pretraining must show)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3dlib.data.mni import MNI_LABELS, mni152_slabs, mni152_tissue, slab_arrays
from sam3dlib.evaluation.metrics import dice
from sam3dlib.modeling.build import build_sam3d

RESOLUTION = 4  # mm: 49 x 58 x 47 voxels, slices padded to the 64 px crop = LiteMedSAM's 64 x 64 grid
CROP = 64
#: measured mean GM/WM DSC of this probe: pretrained 0.824, random 0.481 (docs/PERFORMANCE.md); floor and margin below
PRETRAINED_FLOOR = 0.70
MARGIN = 0.08


@pytest.fixture(scope="module")
def slabs():
    tissue = mni152_tissue(RESOLUTION)
    cases = mni152_slabs(tissue.label, slab=3, gap=2, test_fraction=0.2)
    train = [c for c in cases if c.role == "train"][-2:]  # the two slabs just below the gap
    test = [c for c in cases if c.role == "test"][:1]
    return slab_arrays(tissue, train), slab_arrays(tissue, test)


def _features(model, arrays) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for img, lab in arrays.values():
        d, h, w = img.shape
        pad = np.zeros((d, CROP, CROP), np.float32)
        pad[:, :h, :w] = img
        emb = model.encode(torch.from_numpy(pad)[None, None])[0, :, :, :h, :w]  # 256 x D x h x w (grid = crop)
        feats.append(emb.permute(1, 2, 3, 0).reshape(-1, emb.shape[0]))
        labels.append(torch.from_numpy(lab).reshape(-1))
    return torch.cat(feats), torch.cat(labels)


def _probe_dsc(pretrained: bool, slabs) -> float:
    train, test = slabs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_sam3d(len(MNI_LABELS), image_size=CROP, encoder="litemedsam",
                            encoder_weights=None if pretrained else "random", encoder_pool=1)  # unpooled grid
        xtr, ytr = _features(model, train)
        xte, yte = _features(model, test)
        mean, std = xtr.mean(0), xtr.std(0) + 1e-6
        probe = torch.nn.Linear(xtr.shape[1], len(MNI_LABELS))
        opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(150):
            loss = torch.nn.functional.cross_entropy(probe((xtr - mean) / std), ytr)
            opt.zero_grad()
            loss.backward()
            opt.step()
        pred = probe((xte - mean) / std).argmax(1).numpy()
    gt = yte.numpy()
    return float(np.mean([dice(pred == k, gt == k) for k in (1, 2)]))


@pytest.mark.slow
def test_pretrained_litemedsam_separates_tissue_above_floor_and_random(slabs):
    pretrained, random = _probe_dsc(True, slabs), _probe_dsc(False, slabs)
    assert pretrained >= PRETRAINED_FLOOR, (pretrained, random)
    assert pretrained >= random + MARGIN, (pretrained, random)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """`make demo`'s code path with the vit_tiny stand-in, 4 mm, one test slab and 4 steps (2 epochs of 2);
    returns the output folder and what it printed (the real demo: LiteMedSAM)."""
    import contextlib
    import io

    from sam3dlib.study.mri_demo import MRIDemoSettings, run_mri_demo

    out = tmp_path_factory.mktemp("demo")
    settings = MRIDemoSettings(encoder="vit_tiny", resolution=4, slab=3, gap=2, crop=64, steps=4, eval_every=2,
                               test_slabs=1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        run_mri_demo(out, compare_random=False, settings=settings)
    return out, printed.getvalue()


def test_mri_demo_writes_table_figures_and_record(demo_out):
    import json

    import pandas as pd

    out, _ = demo_out
    names = {p.name for p in out.iterdir()}
    assert {"table.csv", "per_slab.csv", "table.md", "curves.png", "overlays_pretrained.png", "log_pretrained.csv",
            "demo.json", "runs", "data"} <= names
    table = pd.read_csv(out / "table.csv")
    assert {"DSC GM", "DSC WM", "HD95 GM", "HD95 WM", "DSC average"} <= set(table.columns) and len(table) == 1
    per_slab = pd.read_csv(out / "per_slab.csv")
    assert {"model", "case_id", "DSC GM", "HD95 WM"} <= set(per_slab.columns) and len(per_slab) == 1
    saved = json.loads((out / "demo.json").read_text())
    assert "superior to the training slices" in saved["split"] and saved["seconds"] > 0
    assert set(saved["mean_foreground_dsc"]) == {"vit_tiny (random init)"}  # a ViT without a weights file is random
    assert "different anatomy" in (out / "table.md").read_text()


def test_mri_demo_trains_with_the_trainer_and_shows_progress(demo_out):
    """The demo is a trainer run under the ``demo`` profile (AdamW, poly decay per step), printing
    encoding, each epoch's loss with an ETA, and the scoring."""
    from sam3dlib.config import ExperimentConfig
    from sam3dlib.modeling.run_checkpoint import load_checkpoint
    from sam3dlib.training.optim import poly_step_lr
    from sam3dlib.utils.finished import is_finished

    out, printed = demo_out
    run = out / "runs" / "pretrained"
    cfg = ExperimentConfig.load(run / "config.json")
    assert (cfg.name, cfg.profile, cfg.optimizer, cfg.encoder_mode, cfg.poly_per_step) == (
        "custom", "demo", "adamw", "cached", True)
    assert (cfg.epochs, cfg.iterations_per_epoch, cfg.patch_size) == (2, 2, (3, 64, 64)) and is_finished(run)
    lr = load_checkpoint(run / "checkpoints" / "latest.pt", map_location="cpu")["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(poly_step_lr(cfg, 3))  # the last of 4 steps, not the last epoch's rate
    assert "encode cases (vit_tiny)" in printed and "epoch 2/2, loss" in printed and "ETA" in printed
    assert "test cases" in printed


def test_mri_demo_run_folder_predicts_like_sam3d_predict(demo_out, tmp_path):
    """The run folder the demo leaves is one `sam3d predict --run` takes, and predicting a test slab
    from it (``latest.pt``, as the demo scores) gives the segmentation the demo scored."""
    import nibabel as nib

    from sam3dlib.cli import main
    from sam3dlib.inference.predictor import load_run, predict_file

    out, _ = demo_out
    run = out / "runs" / "pretrained"
    (pred,) = sorted((run / "predictions").glob("*.nii.gz"))
    image = out / "data" / "raw" / "imagesTr" / pred.name
    assert main(["predict", "--run", str(run), "-i", str(image), "-o", str(tmp_path / "cli.nii.gz")]) == 0
    cli = np.asarray(nib.load(tmp_path / "cli.nii.gz").dataobj)
    assert cli.shape == nib.load(image).shape and set(np.unique(cli)) <= {0, 1, 2}
    again = predict_file(load_run(run, "cpu", "latest"), image, tmp_path / pred.name)
    np.testing.assert_array_equal(np.asarray(nib.load(again).dataobj), np.asarray(nib.load(pred).dataobj))


def test_write_mni152_task_msd_layout(tmp_path):
    """The task as an MSD raw dataset: every case has image + label with one geometry; split inferior/superior."""
    import json

    import nibabel as nib

    from sam3dlib.data.mni import write_mni152_task

    out = write_mni152_task(tmp_path / "Task_MNI", resolution=4, slab=8, gap=2)
    meta = json.loads((out / "dataset.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "grey matter", "2": "white matter"}
    assert meta["numTraining"] == len(meta["training"]) == len(split["train"]) + len(split["test"])
    assert max(split["slices"][c][1] for c in split["train"]) + 2 <= min(split["slices"][c][0] for c in split["test"])
    for entry in meta["training"]:
        img, lab = nib.load(out / entry["image"]), nib.load(out / entry["label"])
        assert img.shape == lab.shape and img.shape[2] == 8 and (img.affine == lab.affine).all()
        assert set(lab.get_fdata().ravel().astype(int)) <= {0, 1, 2}


def test_mni152_training_block_holds_every_slice_below_the_gap():
    label = np.zeros((4, 4, 40), np.uint8)
    label[..., 3:37] = 1  # brain in z 3-36: 34 slices
    slabs = mni152_slabs(label, slab=6, gap=3, test_fraction=0.35)
    block = mni152_slabs(label, slab=6, gap=3, test_fraction=0.35, train_block=True)
    test = [s for s in slabs if s.role == "test"]
    assert [(s.z0, s.z1) for s in block if s.role == "test"] == [(s.z0, s.z1) for s in test]
    (train,) = [s for s in block if s.role == "train"]
    assert (train.z0, train.z1) == (3, test[0].z0 - 3)  # from the first brain slice up to the gap
    assert min(s.z0 for s in slabs if s.role == "train") > 3  # whole slabs leave the lowest slices out


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_demo_refuses_no_training_steps_in_one_line(tmp_path, capsys, steps):
    """``--steps 0`` used to train the default 150 steps, ``--steps -3`` wrote an untrained result as real."""
    from sam3dlib.cli import main

    assert main(["demo", "--steps", steps, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "steps must be an integer >= 1" in err and steps in err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_compare_random_refuses_an_encoder_without_weights(tmp_path):
    """A ViT without a checkpoint is random twice: both runs would share one label and one set of files."""
    from sam3dlib.study.mri_demo import MRIDemoSettings, run_mri_demo
    from sam3dlib.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="vit_tiny has no weights here.*both runs would be random"):
        run_mri_demo(tmp_path, compare_random=True, settings=MRIDemoSettings(encoder="vit_tiny"))


#: ``make demo --compare``'s road at 4 mm (LiteMedSAM pool 2, 100 steps, two test slabs): measured mean
#: GM/WM DSC and the floors below (docs/PERFORMANCE.md, "The demo")
COMPARE_SETTINGS = dict(resolution=4, slab=4, gap=2, crop=64, steps=100, eval_every=50, test_slabs=2)
COMPARE_FLOOR, COMPARE_MARGIN = 0.45, 0.05


def _chance_dsc(run) -> float:
    """Mean GM/WM Dice of a random prediction with each class's true rate (= that rate), over the test slabs."""
    import nibabel as nib

    rates = []
    for pred in sorted((run / "predictions").glob("*.nii.gz")):
        gt = np.asanyarray(nib.load(run.parents[1] / "data" / "raw" / "labelsTr" / pred.name).dataobj)
        rates.append(np.mean([(gt == k).mean() for k in (1, 2)]))
    return float(np.mean(rates))


@pytest.mark.slow
def test_demo_compare_pretrained_beats_chance_random_and_reports_the_baseline(tmp_path):
    """The real demo road with ``--compare``: LiteMedSAM pretrained above a floor, above twice chance and
    above its random initialisation; a from-scratch nnunet row trained for the pretrained arm's seconds."""
    import json

    import pandas as pd

    from sam3dlib.study.mri_demo import MRIDemoSettings, run_mri_demo

    settings = MRIDemoSettings(**COMPARE_SETTINGS)
    record = run_mri_demo(tmp_path, compare_random=True, compare_baseline=True, settings=settings, progress=False)
    table = pd.read_csv(tmp_path / "table.csv").set_index("arm")
    assert list(table.index) == ["pretrained", "random", "nnunet"]
    pretrained, random = table.loc["pretrained", "DSC average"], table.loc["random", "DSC average"]
    chance = _chance_dsc(tmp_path / "runs" / "pretrained")
    assert pretrained >= COMPARE_FLOOR and pretrained >= 2 * chance, (pretrained, chance)
    assert pretrained >= random + COMPARE_MARGIN, (pretrained, random)
    arms = record["arms"]
    done = json.loads((tmp_path / "runs" / "nnunet" / "finished.json").read_text())
    assert done["model"] == arms["nnunet"]["model"] == "nnunet" and done["stopped_by"] == "time_budget_s"
    assert done["time_budget_s"] == pytest.approx(arms["pretrained"]["budget_seconds"], abs=0.1)
    assert done["steps"] >= 1 and table.loc["nnunet", "sha256"] == "no encoder"
    assert table.loc["nnunet", "trainable params"] > table.loc["pretrained", "trainable params"]
    assert 0.0 <= table.loc["nnunet", "DSC average"] <= 1.0
