"""SAM3D model: shapes, exact parameter counts, frozen encoder."""
from __future__ import annotations

import pytest
import torch

from sam3dlib import build_sam3d
from sam3dlib.data.specs import get_spec

# (num_classes, in_channels, crop, skip) -> trainable parameters (paper Tables 1-5)
PARAM_CASES = [
    ("synapse", 14, 1, 176, True, 1_880_258),
    ("acdc", 4, 1, 160, True, 1_879_668),
    ("lung", 2, 1, 192, True, 1_879_550),
    ("brats", 4, 4, 64, True, 4_632_180),
    ("synapse-noskip", 14, 1, 176, False, 1_836_498),
    ("acdc-noskip", 4, 1, 160, False, 1_835_908),
    ("9-classes", 9, 1, 176, True, 1_879_963),
]


@pytest.mark.parametrize("name,k,c,crop,skip,expected", PARAM_CASES, ids=[p[0] for p in PARAM_CASES])
def test_trainable_parameters_match_paper(name, k, c, crop, skip, expected):
    # The decoder does not depend on the encoder, so the tiny ViT gives the same count quickly.
    model = build_sam3d(num_classes=k, in_channels=c, image_size=(crop, crop), encoder="vit_tiny", skip=skip)
    assert model.trainable_parameters() == expected


def test_vit_b_parameter_count_and_frozen_encoder():
    model = build_sam3d(num_classes=14, image_size=(176, 176))
    assert model.trainable_parameters() == 1_880_258
    assert not any(p.requires_grad for p in model.encoder.parameters())
    # segment-anything's ViT-B image encoder has 89,670,912 parameters at 1024 px; ours differs only
    # by the position embedding (64x64 -> 11x11 tokens of 768) and the 4 global blocks' rel-pos
    # tables (127 -> 21 rows of 64, for h and w).
    resized = 89_670_912 - (64 * 64 - 11 * 11) * 768 - 4 * 2 * (127 - 21) * 64
    assert sum(p.numel() for p in model.encoder.parameters()) == resized


@pytest.mark.parametrize("dataset", ["synapse", "acdc", "lung", "brats"])
def test_output_shapes_per_dataset_crop(dataset):
    spec = get_spec(dataset)
    d, h, w = spec.patch_size
    d = 2  # depth only changes the slice count; keep the test fast
    model = build_sam3d(spec.num_classes, spec.num_channels, (h, w), encoder="vit_tiny")
    x = torch.randn(1, spec.num_channels, d, h, w)
    feats = model.encode(x)
    assert feats.shape == (1, spec.num_channels * 256, d, h // 16, w // 16)
    model.train()
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [
        (1, spec.num_classes, d, h, w),
        (1, spec.num_classes, d, h // 2, w // 2),
        (1, spec.num_classes, d, h // 4, w // 4),
    ]
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, spec.num_classes, d, h, w)


def test_vit_b_encoder_maps_slices_to_embeddings():
    model = build_sam3d(num_classes=2, image_size=(64, 64))
    with torch.no_grad():
        assert model.encoder(torch.randn(2, 3, 64, 64)).shape == (2, 256, 4, 4)


def test_slices_are_encoded_independently_and_batched():
    model = build_sam3d(num_classes=2, in_channels=2, image_size=(32, 32), encoder="vit_tiny", encoder_chunk_size=3)
    x = torch.randn(2, 2, 3, 32, 32)
    feats = model.encode(x)
    # slice (b=1, c=1, d=2) alone, replicated to 3 channels
    with torch.no_grad():
        one = model.encoder(x[1, 1, 2][None, None].expand(1, 3, 32, 32))
    torch.testing.assert_close(feats[1, 256:512, 2], one[0], rtol=1e-4, atol=1e-5)


def test_encoder_frozen_in_train_mode_and_unchanged_by_optimizer():
    model = build_sam3d(num_classes=3, image_size=(32, 32), encoder="vit_tiny")
    model.train()
    assert model.decoder.training and not model.encoder.training
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    outs = model(torch.randn(1, 1, 2, 32, 32))
    sum(o.mean() for o in outs).backward()
    opt.step()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert any(p.grad is not None for p in model.decoder.parameters())


def test_bf16_encoder_option_runs_and_stays_close():
    model = build_sam3d(num_classes=2, image_size=(32, 32), encoder="vit_tiny")
    x = torch.randn(1, 1, 2, 32, 32)
    ref = model.encode(x)
    model.encoder_dtype = torch.bfloat16
    low = model.encode(x)
    assert low.dtype == torch.float32
    assert torch.allclose(low, ref, atol=0.1, rtol=0.1)


def test_no_skip_has_no_residual_branch_and_no_ds_heads_without_deep_supervision():
    model = build_sam3d(num_classes=4, image_size=(32, 32), encoder="vit_tiny", skip=False, deep_supervision=False)
    assert all(b.residual is None for b in model.decoder.blocks)
    model.train()
    assert isinstance(model(torch.randn(1, 1, 2, 32, 32)), torch.Tensor)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"image_size": (100, 100)}, "multiples of 16"),
        ({"encoder": "vit_x"}, "unknown encoder"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = {"num_classes": 2, "image_size": (32, 32), "encoder": "vit_tiny", **kwargs}
    with pytest.raises(ValueError, match=message):
        build_sam3d(**args)


def test_wrong_input_shape_is_rejected():
    model = build_sam3d(num_classes=2, in_channels=4, image_size=(32, 32), encoder="vit_tiny")
    with pytest.raises(ValueError, match="B x 4 x D x 32 x 32"):
        model.encode(torch.randn(1, 1, 2, 32, 32))
    with pytest.raises(ValueError, match="the model's crop"):
        model.encode(torch.randn(1, 4, 2, 48, 48))
