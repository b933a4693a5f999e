"""Sliding-window inference: shapes, blending, mirroring, padding, Gaussian map."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sam3dlib.inference.sliding_window import (
    gaussian_importance_map,
    mirror_combinations,
    sliding_window_predict,
)

PATCH = (4, 8, 8)


def _pointwise(in_ch: int = 2, classes: int = 3, seed: int = 0) -> torch.nn.Conv3d:
    """A 1x1x1 convolution: exactly translation-equivariant, so windows cannot change it."""
    torch.manual_seed(seed)
    return torch.nn.Conv3d(in_ch, classes, kernel_size=1).eval()


def _symmetric_conv(in_ch: int = 2, classes: int = 3, seed: int = 0) -> torch.nn.Conv3d:
    """A 3x3x3 convolution whose kernel is symmetric under every flip: mirror-equivariant."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d(in_ch, classes, kernel_size=3, padding=1)
    with torch.no_grad():
        w = conv.weight
        for dims in ([2], [3], [4]):
            w.copy_((w + w.flip(dims)) / 2)
    return conv.eval()


@pytest.mark.parametrize("shape", [(2, 10, 20, 13), (2, 4, 8, 8), (2, 3, 5, 7)])
def test_pointwise_predictor_equals_whole_volume(shape: tuple[int, ...]) -> None:
    # includes a volume smaller than the patch along every axis (zero-padded, cropped back)
    net = _pointwise()
    image = torch.randn(shape)
    probs = sliding_window_predict(net, image, PATCH, mirror_axes=None)
    with torch.no_grad():
        expected = torch.softmax(net(image[None]), dim=1)[0]
    assert probs.shape == (3, *shape[1:]) and probs.dtype == torch.float32 and probs.device.type == "cpu"
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.sum(0), torch.ones(shape[1:]), atol=1e-5, rtol=0)


def test_conv_predictor_equals_whole_volume_away_from_window_borders() -> None:
    # one window along D and H; along W windows [0, 16) and [8, 24) (patch 16, step 8): every
    # voxel's 3x3x3 neighbourhood lies in each window covering it, except at the inner window
    # borders W = 8 (first column of window 2) and W = 15 (last column of window 1)
    net = _symmetric_conv()
    image = torch.randn(2, 4, 8, 24)
    probs = sliding_window_predict(net, image, (4, 8, 16), mirror_axes=None)
    with torch.no_grad():
        expected = torch.softmax(net(image[None]), dim=1)[0]
    keep = [w for w in range(24) if w not in (8, 15)]
    torch.testing.assert_close(probs[..., keep], expected[..., keep], atol=1e-5, rtol=1e-5)


def test_mirroring_with_mirror_equivariant_predictor_equals_no_mirroring() -> None:
    net = _symmetric_conv()
    image = torch.randn(2, 6, 12, 10)
    plain = sliding_window_predict(net, image, PATCH, mirror_axes=None)
    mirrored = sliding_window_predict(net, image, PATCH, mirror_axes=(0, 1, 2), sw_batch_size=3)
    torch.testing.assert_close(mirrored, plain, atol=1e-5, rtol=1e-5)


def test_mirroring_averages_all_flip_combinations() -> None:
    # a predictor that is not mirror-equivariant (it shifts along W): the result is the mean of
    # the softmax of the plain and the flipped window, flipped back
    image = torch.randn(1, 4, 8, 8)

    def shifted(x: torch.Tensor) -> torch.Tensor:  # logits = (x rolled along W, 0)
        return torch.cat([torch.roll(x, 1, dims=4), torch.zeros_like(x)], dim=1)

    probs = sliding_window_predict(shifted, image, PATCH, mirror_axes=(2,))
    x = image[None]
    a = torch.softmax(shifted(x), 1)
    b = torch.softmax(shifted(x.flip(4)), 1).flip(4)
    torch.testing.assert_close(probs, ((a + b) / 2)[0], atol=1e-6, rtol=1e-6)
    assert len(mirror_combinations((0, 1, 2))) == 8 and mirror_combinations(None) == [()]


def test_gaussian_blending_of_softmax() -> None:
    # two windows along D (patch depth 8, volume depth 12, step 4): window 0 says class 0 with
    # certainty, window 1 class 1. In the overlap D = 4..7, p(class 1) = w(z-4) / (w(z) + w(z-4)).
    calls: list[int] = []

    def per_window(x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((x.shape[0], 2, *x.shape[2:]), -50.0)
        logits[:, len(calls) % 2] = 50.0
        calls.append(1)
        return logits

    probs = sliding_window_predict(per_window, torch.zeros(1, 12, 4, 4), (8, 4, 4), mirror_axes=None)
    assert len(calls) == 2
    w = gaussian_importance_map((8, 4, 4))[:, 0, 0]  # H, W weights cancel in the ratio
    for z in range(12):
        if z < 4:
            expected = 0.0
        elif z >= 8:
            expected = 1.0
        else:
            expected = float(w[z - 4] / (w[z] + w[z - 4]))
        assert probs[1, z, 0, 0].item() == pytest.approx(expected, abs=1e-5)
    torch.testing.assert_close(probs.sum(0), torch.ones(12, 4, 4))


@pytest.mark.parametrize("patch", [(8, 16, 16), (5, 7, 6), (16, 160, 160)])
def test_gaussian_importance_map(patch: tuple[int, int, int]) -> None:
    g = gaussian_importance_map(patch)
    assert g.shape == patch and g.dtype == torch.float32
    assert g.max().item() == pytest.approx(1.0) and g.min().item() > 0
    centre = tuple(s // 2 for s in patch)
    assert g[centre].item() == pytest.approx(1.0)
    # separable Gaussian with sigma = patch / 8 about patch // 2
    idx = [np.arange(s) for s in patch]
    expected = np.ones(patch)
    for axis, (s, i) in enumerate(zip(patch, idx)):
        shape = [1, 1, 1]
        shape[axis] = s
        expected = expected * np.exp(-((i - s // 2) ** 2) / (2 * (s / 8) ** 2)).reshape(shape)
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-3, atol=1e-6)


def test_numpy_input() -> None:
    net = _pointwise(in_ch=1, classes=4)
    image = np.random.default_rng(0).normal(size=(1, 5, 9, 9)).astype(np.float64)
    labels = sliding_window_predict(net, image, PATCH, mirror_axes=(1,)).argmax(0).numpy()
    with torch.no_grad():
        expected = net(torch.from_numpy(image).float()[None])[0].argmax(0).numpy()
    assert labels.shape == (5, 9, 9)
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"image": torch.zeros(4, 8, 8)}, ValueError, r"C x D x H x W, got shape \(4, 8, 8\).*image\[None\]"),
        ({"image": torch.zeros(1, 4, 8, 8, dtype=torch.bool)}, TypeError, "bool"),
        ({"image": np.zeros((1, 4, 8, 8), dtype=np.complex64)}, TypeError, "complex64"),
        ({"patch_size": (4, 8)}, ValueError, "patch_size"),
        ({"overlap": 1.0}, ValueError, "overlap"),
        ({"mirror_axes": (3,)}, ValueError, "mirror_axes"),
        ({"predictor": lambda x: x[:, :, :2]}, ValueError, "returned shape"),
        ({"predictor": lambda x: [x, x]}, TypeError, "deep supervision"),
    ],
)
def test_bad_input_errors(kwargs: dict, error: type, match: str) -> None:
    args = {"predictor": _pointwise(in_ch=1), "image": torch.zeros(1, 4, 8, 8), "patch_size": PATCH, **kwargs}
    with pytest.raises(error, match=match):
        sliding_window_predict(**args)


def test_probabilities_are_finite_for_extreme_logits() -> None:
    probs = sliding_window_predict(lambda x: torch.cat([x * 1e4, -x * 1e4], 1), torch.randn(1, 6, 9, 9), PATCH)
    assert torch.isfinite(probs).all() and math.isclose(probs.sum(0).mean().item(), 1.0, rel_tol=1e-5)
