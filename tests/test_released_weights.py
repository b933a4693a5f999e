"""The authors' released decoder weights: read from every packaging, mapped exactly, same forward as theirs."""
from __future__ import annotations

import pickle

import pytest
import torch
from _authors_formats import TRAINER_DIR, ReferenceDecoder, save_trainer_files, trainer_checkpoint, zip_folder

from sam3dlib.modeling.decoder import Decoder3D
from sam3dlib.modeling.released import (
    ReleasedWeightsError,
    map_authors_state,
    read_released_weights,
    to_authors_state,
)
from sam3dlib.utils.errors import UserInputError

K = 14


def _reference(seed: int = 0, modalities: int = 1) -> ReferenceDecoder:
    torch.manual_seed(seed)
    ref = ReferenceDecoder(K, modalities)
    for p in ref.parameters():  # not the default init: every tensor distinct, biases non-zero
        torch.nn.init.normal_(p, std=0.05)
    return ref


@pytest.mark.parametrize("modalities", [1, 4])
def test_reference_forward_equals_ours(modalities):
    ref = _reference(modalities=modalities)
    ours = Decoder3D(256 * modalities, K)
    ours.load_state_dict(map_authors_state(ref.state_dict(), ours))
    x = torch.randn(1, 256 * modalities, 2, 3, 3)
    ours.train()
    with torch.no_grad():
        theirs, mine = ref(x), ours(x)
    assert [tuple(t.shape) for t in mine] == [(1, K, 2, 48, 48), (1, K, 2, 24, 24), (1, K, 2, 12, 12)]
    for t, m in zip(theirs, mine):
        torch.testing.assert_close(m, t, rtol=1e-4, atol=1e-4)
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs[0], rtol=1e-4, atol=1e-4)


def test_mapping_round_trip_and_wrong_mapping_fails():
    ref = _reference()
    ours = Decoder3D(256, K)
    state = map_authors_state(ref.state_dict(), ours)
    assert to_authors_state(state).keys() == ref.state_dict().keys()
    # swapping the two deep-supervision heads would load (same names would not fit: shapes differ)
    swapped = dict(ref.state_dict())
    swapped["out2.conv_pred.0.weight"], swapped["out3.conv_pred.0.weight"] = (
        swapped["out3.conv_pred.0.weight"], swapped["out2.conv_pred.0.weight"])
    with pytest.raises(ReleasedWeightsError, match=r"out2\.conv_pred\.0\.weight \(32, 64, 3, 3, 3\) \(ours aux_heads\.0"):
        map_authors_state(swapped, ours)


def test_missing_extra_and_shape_keys_named():
    ref = _reference().state_dict()
    ours = Decoder3D(256, K)
    bad = dict(ref)
    del bad["decoder3.downsample.0.bias"]
    bad["decoder1.conv1.0.weight"] = torch.zeros(1)
    bad["out1.segmentation_head.weight"] = torch.zeros(9, 8, 1, 1, 1)
    with pytest.raises(ReleasedWeightsError) as err:
        map_authors_state(bad, ours, "w.model")
    msg = str(err.value)
    assert isinstance(err.value, UserInputError)
    assert "missing 1 key(s): decoder3.downsample.0.bias" in msg
    assert "1 unexpected key(s): decoder1.conv1.0.weight" in msg
    assert "out1.segmentation_head.weight (9, 8, 1, 1, 1) (ours head.layers.3.weight (14, 8, 1, 1, 1))" in msg
    # DDP's module. prefix is dropped as their loader does
    map_authors_state({"module." + k: v for k, v in ref.items()}, ours)


@pytest.fixture
def trainer_tree(tmp_path):
    best, final = _reference(0).state_dict(), _reference(1).state_dict()
    results = tmp_path / "results"
    save_trainer_files(results / TRAINER_DIR, best, K, final_state=final)
    return results, best, final


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_read_every_packaging(trainer_tree, tmp_path):
    results, best, final = trainer_tree
    fold = results / TRAINER_DIR
    got = read_released_weights(fold / "model_best.model")
    assert got.which == "model_best" and _equal(got.state, best) and got.epoch == 412 and got.amp
    assert got.info == {"name": "sam3d_trainer_synapse", "num_classes": 13, "num_modalities": 1,
                        "patch_size": [64, 176, 176]}
    for given in (results, fold, zip_folder(results / "sam3d", tmp_path / "tree.zip", results),
                  zip_folder(fold, tmp_path / "fold.zip")):
        got = read_released_weights(given)
        assert got.which == "model_best" and _equal(got.state, best), given
        assert got.others["model_final_checkpoint"][0].endswith("model_final_checkpoint.model")
        assert _equal(got.others["model_final_checkpoint"][2], final)
        assert got.info["name"] == "sam3d_trainer_synapse"
    assert read_released_weights(fold / "model_final_checkpoint.model").which == "model_final_checkpoint"
    bare = tmp_path / "bare" / "synapse_decoder.pth"
    bare.parent.mkdir()
    torch.save(best, bare)
    got = read_released_weights(bare)
    assert got.which == "state_dict" and _equal(got.state, best) and got.epoch is None
    assert read_released_weights(bare.parent).which == "state_dict"


def test_sha256_of_the_file_read(trainer_tree, tmp_path):
    import hashlib

    results, _, _ = trainer_tree
    f = results / TRAINER_DIR / "model_best.model"
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert read_released_weights(f).sha256 == want
    assert read_released_weights(zip_folder(results / TRAINER_DIR, tmp_path / "z.zip")).sha256 == want


def test_unsafe_or_broken_files_refused(trainer_tree, tmp_path):
    results, best, _ = trainer_tree
    fold = results / TRAINER_DIR

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.model"
    torch.save({**trainer_checkpoint(best), "plot_stuff": Evil()}, evil)
    with pytest.raises(ReleasedWeightsError, match="weights_only=True"):
        read_released_weights(evil)
    truncated = tmp_path / "model_best.model"
    truncated.write_bytes((fold / "model_best.model").read_bytes()[:5000])
    with pytest.raises(ReleasedWeightsError, match="cannot be read"):
        read_released_weights(truncated)
    with open(fold / "model_best.model.pkl", "wb") as fh:
        pickle.dump({"name": Evil()}, fh)
    with pytest.raises(ReleasedWeightsError, match="refusing to load"):
        read_released_weights(fold / "model_best.model")
    with pytest.raises(ReleasedWeightsError, match="no model_best.model or model_final_checkpoint.model"):
        read_released_weights(_empty(tmp_path))
    with pytest.raises(FileNotFoundError):
        read_released_weights(tmp_path / "absent.model")


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "readme.txt").write_text("x")
    return d
