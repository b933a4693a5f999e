"""`sam3d import-released`: the authors' trainer files become a run that predicts like the run they came from."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from _authors_formats import TRAINER_DIR, save_trainer_files, zip_folder

from sam3dlib.cli import main as cli_main
from sam3dlib.modeling.released import to_authors_state
from sam3dlib.modeling.run_checkpoint import load_checkpoint


def released_from_run(run, folder):
    """The run's best decoder saved the way the authors' trainer saves it (their key names)."""
    state = to_authors_state(load_checkpoint(run / "checkpoints" / "best.pt")["decoder"])
    return save_trainer_files(folder, state, num_classes=14)


def test_import_released_predicts_like_the_source_run(smoke_run, synapse_store, tmp_path, capsys):
    from sam3dlib.pipeline import evaluate_run

    run = smoke_run["run"]
    results = tmp_path / "their_results"
    released_from_run(run, results / TRAINER_DIR)
    zipped = zip_folder(results / "sam3d", tmp_path / "synapse_weights.zip", results)
    out = tmp_path / "imported"
    cfg = smoke_run["config"]
    code = cli_main(["import-released", "synapse", "--weights", str(zipped), "--out", str(out),
                     "--data", str(synapse_store), "--set", "encoder=vit_tiny", "--set", "encoder_weights=none",
                     "--set", f"patch_size={','.join(map(str, cfg.patch_size))}", "--set", "device=cpu",
                     "--set", "encoder_mode=cached", "--set", "mirror_tta=" + str(cfg.mirror_tta).lower()])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "imported model_best" in text and "sha256" in text
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["released"]["which"] == "model_best" and prov["released"]["file"].endswith("fold_0/model_best.model")
    assert len(prov["released"]["sha256"]) == 64
    evaluate_run(out, synapse_store, progress=False)
    ours, theirs = pd.read_csv(run / "per_case.csv"), pd.read_csv(out / "per_case.csv")
    pd.testing.assert_frame_equal(theirs, ours)
    # an existing run folder is not overwritten
    code = cli_main(["import-released", "synapse", "--weights", str(zipped), "--out", str(out),
                     "--data", str(synapse_store), "--set", "encoder=vit_tiny", "--set", "encoder_weights=none"])
    assert code == 2 and "not empty" in capsys.readouterr().err


def test_import_refuses_weights_of_another_dataset(smoke_run, synapse_store, tmp_path, capsys):
    state = to_authors_state(load_checkpoint(smoke_run["run"] / "checkpoints" / "best.pt")["decoder"])
    bad = {k: (v[:4] if k.endswith(("segmentation_head.weight", "segmentation_head.bias")) else v)
           for k, v in state.items()}  # an ACDC-sized (4-class) output
    torch.save(bad, tmp_path / "acdc.pth")
    code = cli_main(["import-released", "synapse", "--weights", str(tmp_path / "acdc.pth"), "--out",
                     str(tmp_path / "o"), "--data", str(synapse_store), "--set", "encoder=vit_tiny",
                     "--set", "encoder_weights=none", "--set", "patch_size=16,48,48"])
    err = capsys.readouterr().err
    assert code == 2 and "out1.segmentation_head.weight (4, 8, 1, 1, 1) (ours head.layers.3.weight (14, 8, 1, 1, 1))" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["sam_vit_b_01ec64.pth", "sam_vit_h_4b8939.pth"])
def test_official_name_with_other_content_refused(tmp_path, name):
    from sam3dlib.modeling.encoders.sam_vit import official_identity
    from sam3dlib.modeling.weights_file import CheckpointError

    fake = tmp_path / name
    fake.write_bytes(b"not the official file")
    with pytest.raises(CheckpointError, match=f"{name}: md5 .* is not that of the official"):
        official_identity(fake)
    assert official_identity(tmp_path / "medsam_vit_b.pth") is None


def test_every_encoder_build_verifies_an_official_name(tmp_path):
    """The encoder builder (train, predict, reproduce, import-released all use it) refuses a file named as an
    official checkpoint whose md5 is not the official one, before reading it."""
    from sam3dlib import build_sam3d
    from sam3dlib.modeling.encoders import save_random_sam_weights
    from sam3dlib.modeling.weights_file import CheckpointError

    fake = save_random_sam_weights(tmp_path / "sam_vit_b_01ec64.pth", "vit_tiny")
    with pytest.raises(CheckpointError, match="is not that of the official sam_vit_b_01ec64.pth"):
        build_sam3d(num_classes=4, image_size=(32, 32), encoder="vit_tiny", encoder_weights=fake)
    renamed = fake.rename(tmp_path / "my_vit_tiny.pth")
    build_sam3d(num_classes=4, image_size=(32, 32), encoder="vit_tiny", encoder_weights=renamed)  # not an official name
