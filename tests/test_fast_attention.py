"""sam3dlib.modeling.fast_attention gives segment-anything's embeddings (fp32: 1e-4 of max|emb|).

Every case perturbs the zero-initialised tensors (position embeddings, relative-position
tables) so that the relative-position path is really exercised.
"""
from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.image_encoder import Block

from sam3dlib.modeling.build import build_sam3d
from sam3dlib.modeling.encoders import build_image_encoder
from sam3dlib.modeling.fast_attention import (
    FastBlock,
    disable_fast_attention,
    enable_fast_attention,
    fast_attention_enabled,
)

FP32_RTOL = 1e-4  # of max |embedding|; observed ~1e-6
BF16_RTOL = 0.1  # bf16 autocast vs the fp32 embedding, of max |embedding|


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module.eval()


def _pair(encoder: ImageEncoderViT) -> tuple[ImageEncoderViT, ImageEncoderViT]:
    return encoder, enable_fast_attention(copy.deepcopy(encoder))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / a.float().abs().max())


# (encoder, (H, W), slices, what the case covers)
CASES = [
    ("vit_tiny", (64, 64), 3, "BraTS crop: 4x4 tokens in one 14x14 window (192 padded tokens)"),
    ("vit_tiny", (176, 160), 2, "non-square, one padded window"),
    ("vit_tiny", (224, 224), 2, "exactly one window, no padding"),
    ("vit_tiny", (256, 240), 2, "several windows, padded: SAM's partition + SDPA"),
    ("vit_b", (64, 64), 1, "the real ViT-B configuration"),
]


@pytest.mark.parametrize("name,hw,n,why", CASES, ids=[f"{c[0]}-{c[1][0]}x{c[1][1]}" for c in CASES])
def test_fp32_embeddings_equal_segment_anything(name, hw, n, why):
    torch.manual_seed(0)
    sam, fast = _pair(_randomise(build_image_encoder(name, hw)))
    x = torch.randn(n, 3, *hw)
    with torch.no_grad():
        assert _rel_err(sam(x), fast(x)) < FP32_RTOL, why


@pytest.mark.parametrize("qkv_bias,use_rel_pos", [(False, True), (True, False), (False, False)])
def test_other_attention_settings(qkv_bias, use_rel_pos):
    enc = ImageEncoderViT(img_size=96, depth=2, embed_dim=32, num_heads=2, qkv_bias=qkv_bias,
                          use_rel_pos=use_rel_pos, window_size=14, global_attn_indexes=(1,), out_chans=16,
                          norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    sam, fast = _pair(_randomise(enc, seed=1))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert _rel_err(sam(x), fast(x)) < FP32_RTOL


def test_bf16_autocast_within_stated_tolerance():
    sam, fast = _pair(_randomise(build_image_encoder("vit_tiny", (96, 96))))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = sam(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sam_bf16, fast_bf16 = sam(x), fast(x)
    assert _rel_err(ref, sam_bf16) < BF16_RTOL  # the bound SAM's own bf16 forward meets
    assert _rel_err(ref, fast_bf16) < BF16_RTOL


def test_sam3d_encode_unchanged_and_state_dict_keys_kept():
    torch.manual_seed(0)
    model = build_sam3d(num_classes=3, in_channels=2, image_size=(48, 64), encoder="vit_tiny")
    _randomise(model.encoder)
    keys = list(model.state_dict())
    vol = torch.randn(1, 2, 3, 48, 64)
    ref = model.encode(vol)
    enable_fast_attention(model.encoder)
    assert fast_attention_enabled(model.encoder)
    assert list(model.state_dict()) == keys
    assert _rel_err(ref, model.encode(vol)) < FP32_RTOL


def test_enable_disable_roundtrip_and_idempotent():
    enc = build_image_encoder("vit_tiny", (32, 32))
    enable_fast_attention(enable_fast_attention(enc))
    assert all(type(b) is FastBlock for b in enc.blocks)
    disable_fast_attention(enc)
    assert all(type(b) is Block for b in enc.blocks) and not fast_attention_enabled(enc)


def test_rejects_non_encoder():
    with pytest.raises(TypeError, match="ImageEncoderViT"):
        enable_fast_attention(torch.nn.Linear(2, 2))
