"""Feature cache: tile grid, exactness against the online encoder, staleness keys."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _fixtures_train import copy_store, tiny_config

from sam3dlib.data.store import PreparedDataset, case_paths
from sam3dlib.modeling.factory import build_model
from sam3dlib.training.data import CachedPatchDataset
from sam3dlib.training.feature_cache import FeatureCache, cache_settings, tile_origins


@pytest.mark.parametrize("size, crop, stride, expected", [
    (48, 32, 16, [0, 16]),
    (50, 32, 16, [0, 16, 18]),
    (32, 32, 16, [0]),
    (20, 32, 16, [0]),          # smaller than the crop: one zero-padded tile
    (100, 32, 32, [0, 32, 64, 68]),
])
def test_tile_origins(size, crop, stride, expected):
    assert tile_origins(size, crop, stride) == expected


@pytest.fixture(scope="module")
def built(synapse_store, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny_config(cache_dir=str(tmp_path_factory.mktemp("cache")))
    store = PreparedDataset(synapse_store)
    model = build_model(cfg, store.spec).eval()
    cache = FeatureCache(cfg.cache_dir, cache_settings(cfg, model))
    cache.build(store, store.case_ids, model, progress=False)
    yield cfg, store, model, cache
    torch.set_num_threads(threads)


def test_cached_features_equal_online_encoding(built):
    """Cached and online modes give the same decoder input for the same un-augmented patch."""
    cfg, store, model, cache = built
    d, h, w = cfg.patch_size
    case = store.case_ids[0]
    entry = cache.entry(case)
    assert entry.features.dtype == np.float16 and len(entry.tiles) == 4  # 48 x 48 -> 2 x 2 tiles of 32
    image = np.asarray(store.image(case))
    for tile, z0 in [(0, 0), (3, 5), (1, image.shape[1] - d)]:
        y0, x0 = entry.tiles[tile]
        patch = torch.from_numpy(np.ascontiguousarray(image[None, :, z0:z0 + d, y0:y0 + h, x0:x0 + w]))
        online = model.encode(patch)[0].numpy()
        cached = np.asarray(entry.features[tile, :, z0:z0 + d], dtype=np.float32)
        scale = np.abs(online).max()
        np.testing.assert_allclose(cached, online, atol=2e-3 * scale, rtol=1e-2)
        ds = CachedPatchDataset(cache, store, [case], cfg.patch_size, 2, 1, augment=False)
        feats, label = ds.patch(case, tile, z0)
        np.testing.assert_array_equal(feats, cached)
        np.testing.assert_array_equal(label, np.asarray(store.label(case))[z0:z0 + d, y0:y0 + h, x0:x0 + w])


def test_dataset_items_are_deterministic(built):
    cfg, store, _, cache = built
    ds = CachedPatchDataset(cache, store, store.case_ids, cfg.patch_size, 2, 3, augment=True, seed=7)
    a, b = ds[5], ds[5]
    assert torch.equal(a["features"], b["features"]) and torch.equal(a["label"], b["label"])
    assert a["features"].shape == (256, 8, 2, 2) and a["label"].shape == (8, 32, 32)
    assert ds[1]["label"].max() > 0  # batch position 1 of 2 is forced onto foreground


def test_stale_entry_is_rebuilt(built, synapse_store, tmp_path):
    cfg, _, model, _ = built
    store = PreparedDataset(copy_store(synapse_store, tmp_path / "store"))
    cache = FeatureCache(tmp_path / "cache", cache_settings(cfg, model))
    assert cache.build(store, store.case_ids, model, progress=False) == store.case_ids
    assert cache.build(store, store.case_ids, model, progress=False) == []  # all current: reused
    image = case_paths(store.root, store.case_ids[0])["image"]
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the store image changed
    assert not cache.is_current(store.case_ids[0], image)
    assert cache.build(store, store.case_ids, model, progress=False) == [store.case_ids[0]]


def test_settings_change_gives_another_store(built):
    cfg, _, model, cache = built
    other = FeatureCache(cfg.cache_dir, cache_settings(cfg.replace(cache_stride=(32, 32)), model))
    assert other.root != cache.root
    seeded = FeatureCache(cfg.cache_dir, cache_settings(cfg.replace(seed=1), model))
    assert seeded.root != cache.root  # a random encoder depends on the seed


def test_cached_patches_oversample_from_the_data_layers_voxels():
    """One foreground-voxel implementation and cap for image and feature patches (data.sampling)."""
    from types import SimpleNamespace

    from sam3dlib.data.sampling import MAX_LOCATIONS_PER_CLASS, PatchDataset

    label = np.zeros((12, 40, 40), np.uint8)
    label[:, 4:36, 4:36] = 1  # 12 288 voxels of class 1: more than the cap
    label[5, 10, 10] = 2

    class Store:
        root, case_ids = "in-memory", ["a"]

        def label(self, case_id):
            return label

        def image(self, case_id):
            return np.zeros((1, *label.shape), np.float32)

    fake_cache = SimpleNamespace(settings=SimpleNamespace(crop_hw=(32, 32)))
    cached = CachedPatchDataset(fake_cache, Store(), ["a"], (8, 32, 32), 2, 1)
    image = PatchDataset(Store(), ["a"], (8, 32, 32), 2, 1, augment=False)
    locations = cached.locations("a")
    assert sorted(locations) == [1, 2] and len(locations[1]) == MAX_LOCATIONS_PER_CLASS
    for cls in (1, 2):
        np.testing.assert_array_equal(locations[cls], image.locations("a")[cls])
        assert (label[tuple(locations[cls].T)] == cls).all()
