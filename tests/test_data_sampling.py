"""Patch sampling: determinism, foreground oversampling, padding, augmentation parameters and cost."""
from __future__ import annotations

import json
import time
from importlib import resources

import numpy as np
import pytest
import torch

from sam3dlib.data import augment as A
from sam3dlib.data.phantoms import write_phantom
from sam3dlib.data.prepare import prepare_dataset
from sam3dlib.data.sampling import PatchDataset, crop_pad, force_foreground, sample_patch_location


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    base = tmp_path_factory.mktemp("lung")
    return prepare_dataset("lung", write_phantom("lung", base / "raw", n_cases=3, size="tiny"), base / "store")


def test_items_deterministic_from_seed_and_index(store):
    ds = PatchDataset(store, store.case_ids, (8, 32, 32), batch_size=2, iterations=4, seed=7)
    a, b = ds[3], ds[3]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert a["image"].shape == (1, 8, 32, 32) and a["image"].dtype == torch.float32 and a["label"].dtype == torch.int64
    other = PatchDataset(store, store.case_ids, (8, 32, 32), batch_size=2, iterations=4, seed=8)
    assert any(not torch.equal(ds[i]["image"], other[i]["image"]) for i in range(4))


def test_loader_workers_do_not_change_items(store):
    """The trainer's loader (online mode: image patches, moreDA) gives the same batches with workers."""
    from sam3dlib.study.registry import get_config
    from sam3dlib.training.data import TRAIN_STREAM, epoch_loader
    from sam3dlib.training.distributed import DistContext
    from sam3dlib.training.feature_source import OnlineEncoder

    def batches(workers: int) -> list[dict]:
        cfg = get_config("table3_lung", "smoke", encoder_mode="online", patch_size=(8, 32, 32), num_workers=workers)
        return list(epoch_loader(cfg, OnlineEncoder(cfg), store, store.case_ids, 3, 0, TRAIN_STREAM, DistContext(),
                                 augment=True))

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 3 and serial[0]["image"].shape == (2, 1, 8, 32, 32)
    for s, p in zip(serial, parallel):
        assert s["case_id"] == p["case_id"] and torch.equal(s["label"], p["label"])
        assert torch.allclose(s["image"], p["image"], atol=1e-4)  # float rounding may differ by thread count


@pytest.mark.parametrize("batch,forced", [(2, [False, True]), (4, [False, False, False, True])])
def test_foreground_oversampling_rate(store, batch, forced):
    assert [force_foreground(i, batch) for i in range(batch)] == forced
    ds = PatchDataset(store, store.case_ids, (8, 24, 24), batch_size=batch, iterations=20, augment=False, seed=0)
    has_fg = np.array([(ds[i]["label"] > 0).any().item() for i in range(len(ds))]).reshape(-1, batch)
    assert has_fg[:, -1].all()  # forced positions always hold foreground
    # the small tumour is rarely hit at random: forced items raise the overall rate to >= 1/B
    assert has_fg.mean() >= 1 / batch


def test_padding_when_volume_is_smaller(store):
    shape = store.image(store.case_ids[0]).shape[1:]
    patch = tuple(s + 6 for s in shape)
    ds = PatchDataset(store, store.case_ids[:1], patch, batch_size=1, iterations=1, augment=False)
    item = ds[0]
    assert item["image"].shape[1:] == patch and (item["image"][0, 0] == 0).all() or (item["image"][0, -1] == 0).all()
    assert int((item["label"] > 0).sum()) == int((np.asarray(store.label(store.case_ids[0])) > 0).sum())


def test_sample_patch_location_contains_foreground():
    rng = np.random.default_rng(0)
    locs = {3: np.array([[2, 40, 5]])}
    for _ in range(20):
        z, y, x = sample_patch_location((10, 50, 50), (4, 8, 8), rng, locs, force_fg=True)
        assert z <= 2 < z + 4 and y <= 40 < y + 8 and x <= 5 < x + 8 and 0 <= x and y + 8 <= 50


def test_crop_pad():
    a = np.arange(27).reshape(3, 3, 3)
    out = crop_pad(a, (-1, 0, 1), (3, 3, 3), value=-1)
    assert out.shape == (3, 3, 3) and (out[0] == -1).all() and (out[:, :, 2] == -1).all()
    assert np.array_equal(out[1:, :, :2], a[:2, :, 1:])


def test_augmentation_parameters_match_datasets_json():
    facts = json.loads(resources.files("sam3dlib.resources").joinpath("datasets.json").read_text())
    da = {t["name"]: t.get("params") for t in facts["_common"]["data_augmentation_moreDA"]["order_of_transforms"]}
    sp = da["SpatialTransform"]
    assert (A.P_ROTATION, A.ROTATION_DEG) == (sp["rotation"]["p_per_sample"], sp["rotation"]["angle_x_deg"][1])
    assert (A.P_SCALING, list(A.SCALE_RANGE)) == (sp["scaling"]["p_per_sample"], sp["scaling"]["range"])
    assert (A.P_NOISE, A.NOISE_STD_MAX) == (da["GaussianNoise"]["p_per_sample"], da["GaussianNoise"]["noise_variance"][1])
    assert (A.P_BLUR, list(A.BLUR_SIGMA)) == (da["GaussianBlur"]["p_per_sample"], da["GaussianBlur"]["sigma"])
    assert list(A.BRIGHTNESS_RANGE) == da["BrightnessMultiplicative"]["multiplier_range"]
    assert list(A.CONTRAST_RANGE) == da["ContrastAugmentation"]["contrast_range"]
    assert (A.P_LOWRES, list(A.LOWRES_ZOOM)) == (da["SimulateLowResolution"]["p_per_sample"], da["SimulateLowResolution"]["zoom_range"])
    assert (A.P_GAMMA_INVERTED, A.P_GAMMA) == (da["Gamma (inverted image)"]["p_per_sample"], da["Gamma"]["p_per_sample"])
    assert A.P_MIRROR == da["Mirror"]["p_per_axis"]


@pytest.mark.parametrize("patch,dummy", [((16, 160, 160), True), ((64, 176, 176), False), ((34, 192, 192), True),
                                         ((64, 64, 64), False)])
def test_dummy_2d_rule(patch, dummy):
    assert A.use_dummy_2d(patch) is dummy


def test_spatial_matrix_input_size_covers_patch():
    rng = np.random.default_rng(1)
    for _ in range(50):
        m = A.draw_spatial(rng, dummy_2d=False)
        if m is not None:
            size = A.input_size(m, (16, 32, 32))
            assert all(s >= p and (s - p) % 2 == 0 for s, p in zip(size, (16, 32, 32)))


def test_augmentation_is_cheap():
    img = torch.randn(1, 16, 96, 96)
    lab = torch.zeros(16, 96, 96, dtype=torch.long)
    aug = A.Augmenter((16, 96, 96))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        t0 = time.perf_counter()
        for i in range(10):
            rng = np.random.default_rng(i)
            m = A.draw_spatial(rng, aug.dummy_2d)
            x, y = (A.apply_spatial(img, lab, m, (16, 96, 96)) if m is not None else (img, lab))
            x = aug.intensity(x, rng)
            A.mirror(x, y, rng)
        per = (time.perf_counter() - t0) / 10
    finally:
        torch.set_num_threads(threads)
    assert per < 0.25, f"{per:.3f} s per 1x16x96x96 patch"  # typically ~0.02-0.05 s on an idle core
