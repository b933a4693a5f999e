"""Loading official-format SAM checkpoints: equality with segment-anything, resizing, bad files."""
from __future__ import annotations

import gzip
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT

from sam3dlib import CheckpointError, build_sam3d
from sam3dlib.modeling.constants import RANDOM_INIT
from sam3dlib.modeling.encoders import load_encoder_state
from sam3dlib.modeling.weights_file import file_sha256


def _reference_encoder(state: dict, crop: int) -> ImageEncoderViT:
    """segment-anything's own ViT-B encoder at ``crop`` px, weights resized as the spec says."""
    vit = ImageEncoderViT(
        depth=12, embed_dim=768, img_size=crop, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=12, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(2, 5, 8, 11),
        window_size=14, out_chans=256,
    )
    enc = {k[len("image_encoder."):]: v.clone() for k, v in state.items() if k.startswith("image_encoder.")}
    t = crop // 16
    pos = enc["pos_embed"].permute(0, 3, 1, 2)
    enc["pos_embed"] = F.interpolate(pos, (t, t), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    for i in (2, 5, 8, 11):
        for a in "hw":
            rel = enc[f"blocks.{i}.attn.rel_pos_{a}"]
            enc[f"blocks.{i}.attn.rel_pos_{a}"] = F.interpolate(
                rel[None, None], (2 * t - 1, rel.shape[1]), mode="bilinear", align_corners=False
            )[0, 0]
    vit.load_state_dict(enc)
    return vit.eval()


def test_embeddings_equal_segment_anything(sam_vit_b_checkpoint):
    crop = 64
    model = build_sam3d(num_classes=2, image_size=(crop, crop), encoder_weights=sam_vit_b_checkpoint)
    state = torch.load(sam_vit_b_checkpoint, weights_only=True)
    ref = _reference_encoder(state, crop)
    volume = torch.randn(1, 1, 3, crop, crop)
    with torch.no_grad():
        expected = ref(volume[0, 0][:, None].expand(3, 3, crop, crop))  # D x 256 x 4 x 4
    got = model.encode(volume)[0].permute(1, 0, 2, 3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert model.encoder_sha256 == file_sha256(sam_vit_b_checkpoint)
    assert model.encoder_source == str(sam_vit_b_checkpoint)


def test_full_size_load_is_lossless(sam_vit_b_checkpoint):
    state = load_encoder_state(sam_vit_b_checkpoint, "vit_b", (1024, 1024))
    original = torch.load(sam_vit_b_checkpoint, weights_only=True)
    assert all(torch.equal(v, original["image_encoder." + k]) for k, v in state.items())
    # the file was written from segment-anything's own vit_b (conftest): its encoder keys are SAM's
    assert set(state) == {k[len("image_encoder."):] for k in original if k.startswith("image_encoder.")}


def test_resized_shapes(sam_vit_b_checkpoint):
    state = load_encoder_state(sam_vit_b_checkpoint, "vit_b", (176, 176))
    assert state["pos_embed"].shape == (1, 11, 11, 768)
    assert state["blocks.2.attn.rel_pos_h"].shape == (21, 64)
    assert state["blocks.11.attn.rel_pos_w"].shape == (21, 64)
    assert state["blocks.0.attn.rel_pos_h"].shape == (27, 64)  # window block unchanged


def test_random_init_is_recorded():
    model = build_sam3d(num_classes=2, image_size=(32, 32), encoder="vit_tiny")
    assert model.random_encoder and model.encoder_source == RANDOM_INIT


def _write(path, obj):
    torch.save(obj, path)
    return path


BAD_FILES = [
    ("missing", lambda p, ck: p / "nope.pth", FileNotFoundError, "does not exist"),
    ("random bytes", lambda p, ck: (p / "junk.pth").write_bytes(b"\x00garbage" * 100) and p / "junk.pth",
     CheckpointError, "cannot be read as weights: not a PyTorch weights file"),
    ("truncated", lambda p, ck: (p / "trunc.pth").write_bytes(ck.read_bytes()[: 200_000]) and p / "trunc.pth",
     CheckpointError, "cannot be read as weights: the file is incomplete or damaged"),
    ("gzip of a checkpoint", lambda p, ck: (p / "gz.pth").write_bytes(gzip.compress(b"abc")) and p / "gz.pth",
     CheckpointError, r"not a PyTorch weights file \(it starts with bytes 1f 8b"),
    ("empty", lambda p, ck: (p / "empty.pth").write_bytes(b"") == 0 and p / "empty.pth",
     CheckpointError, r"the file is empty \(0 bytes\)"),
    ("not SAM", lambda p, ck: _write(p / "resnet.pth", {"conv1.weight": torch.zeros(3)}),
     CheckpointError, "holds no SAM image encoder"),
    ("other ViT size", lambda p, ck: ck, CheckpointError, "holds a vit_tiny image encoder"),
    ("pickled object", lambda p, ck: _write(p / "obj.pth", {"image_encoder.x": torch.nn.Linear(1, 1)}),
     CheckpointError, "holds Python objects besides tensors"),
]


@pytest.mark.parametrize("name,make,exc,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_checkpoints_give_clear_errors(tmp_path, sam_vit_tiny_checkpoint, name, make, exc, message):
    path = make(tmp_path, sam_vit_tiny_checkpoint)
    with pytest.raises(exc, match=message) as info:
        build_sam3d(num_classes=2, image_size=(32, 32), encoder="vit_b", encoder_weights=path)
    assert str(path) in str(info.value)


def test_shape_mismatch_names_the_file(tmp_path, sam_vit_tiny_checkpoint):
    state = torch.load(sam_vit_tiny_checkpoint, weights_only=True)
    state["image_encoder.neck.0.weight"] = torch.zeros(5, 5, 1, 1)
    path = _write(tmp_path / "bad_neck.pth", state)
    with pytest.raises(CheckpointError, match="bad_neck.pth"):
        build_sam3d(num_classes=2, image_size=(32, 32), encoder="vit_tiny", encoder_weights=path)
