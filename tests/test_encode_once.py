"""Sliding windows over SAM3D that encode each slice once: same maps, each slice encoded once."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from sam3dlib.inference.encode_once import (
    bytes_per_slice,
    centred_padding,
    feature_memory_bytes,
    plan_case,
    window_grid,
)
from sam3dlib.inference.sliding_window import mirror_combinations, sliding_window_predict
from sam3dlib.modeling.build import build_sam3d

PATCH = (4, 16, 16)
pytestmark = pytest.mark.usefixtures("one_thread")  # 2 threads on the shared cores contend


@pytest.fixture(scope="module")
def model():
    """A vit_tiny SAM3D with two modalities (16 x 16 crop, 1 x 1 grid): cheap, every code path."""
    torch.manual_seed(0)
    return build_sam3d(3, in_channels=2, image_size=PATCH[1:], encoder="vit_tiny", encoder_chunk_size=3).eval()


class SliceRecorder(nn.Module):
    """Wraps an encoder; records every slice it is given (channel 0 of its 3 grey channels)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.inner = encoder
        self.seen: list[bytes] = []
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.seen.extend(s[0].numpy().tobytes() for s in x)
        return self.inner(x)


@pytest.mark.parametrize("shape,mirror,batch", [
    ((2, 6, 20, 24), (0, 1, 2), 1),   # 2 depth x 2 x 2 in-plane windows, all 8 mirror terms
    ((2, 7, 16, 20), None, 2),        # no mirroring, 2 windows per decoder call
    ((2, 3, 11, 18), (0, 2), 1),      # smaller than the patch in D and H: padded and cropped back
])
def test_same_probabilities_as_whole_model_per_window(model, shape, mirror, batch) -> None:
    image = torch.randn(shape)
    ref = sliding_window_predict(model, image, PATCH, mirror_axes=mirror, sw_batch_size=batch, encode_once=False)
    new = sliding_window_predict(model, image, PATCH, mirror_axes=mirror, sw_batch_size=batch)
    assert new.shape == ref.shape == (3, *shape[1:])
    torch.testing.assert_close(new, ref, atol=1e-5, rtol=0)
    assert torch.equal(new.argmax(0), ref.argmax(0))


def _expected_slices(image: torch.Tensor, flips: list[tuple[int, ...]]) -> Counter:
    """One entry per (modality, slice, in-plane window, in-plane flip) of an unpadded case."""
    grid = window_grid(image.shape[1:], PATCH, 0.5)
    inplane = {tuple(a for a in f if a) for f in flips}
    want: Counter = Counter()
    for h0, w0 in grid:
        crop = image[:, :, h0:h0 + PATCH[1], w0:w0 + PATCH[2]]
        for f in inplane:
            flipped = torch.flip(crop, [a + 1 for a in f]) if f else crop
            want.update(s.numpy().tobytes() for s in flipped.reshape(-1, *PATCH[1:]))
    return want


@pytest.mark.parametrize("mirror", [(0, 1, 2), None])
def test_each_slice_window_and_flip_encoded_exactly_once(model, mirror) -> None:
    image = torch.randn(2, 8, 24, 20)  # 3 depth windows x 2 x 2 in-plane; no padding: slices distinct
    recorder = SliceRecorder(model.encoder)
    original, model.encoder = model.encoder, recorder
    try:
        sliding_window_predict(model, image, PATCH, mirror_axes=mirror)
    finally:
        model.encoder = original
    seen, want = Counter(recorder.seen), _expected_slices(image, mirror_combinations(mirror))
    repeated = sum(n - 1 for n in seen.values() if n > 1)
    assert repeated == 0, f"{repeated} slice encodings repeated"
    assert seen == want
    plan = plan_case(model, image.shape[1:], PATCH, 0.5, mirror_combinations(mirror))
    assert plan.slices_encoded * image.shape[0] == len(recorder.seen)
    # in batches of the chunk size (3): the first window's 4 slices, then the rest of a chunk ahead
    assert recorder.calls < len(recorder.seen) / 2


def test_embeddings_held_stay_within_the_stated_bound(model, monkeypatch) -> None:
    from sam3dlib.inference import encode_once

    peak = {"n": 0}
    real = encode_once.SliceFeatures.slices

    def spy(self, lo, hi):
        out = real(self, lo, hi)
        peak["n"] = max(peak["n"], self.buffer.shape[1])
        return out

    monkeypatch.setattr(encode_once.SliceFeatures, "slices", spy)
    sliding_window_predict(model, torch.randn(2, 30, 16, 16), PATCH, mirror_axes=(0, 1), sw_batch_size=2)
    bound = feature_memory_bytes(model, PATCH[0], 2, 2, windows_per_batch=2)
    assert 0 < peak["n"] * 2 * bytes_per_slice(model) <= bound  # 2 in-plane flips
    assert peak["n"] < 30  # not the whole case


def test_plan_counts_windows_and_padding(model) -> None:
    assert centred_padding((3, 11, 18), PATCH) == [(0, 1), (2, 3), (0, 0)]
    plan = plan_case(model, (9, 20, 24), PATCH, 0.5, mirror_combinations((0, 1, 2)))
    assert (plan.positions, plan.windows, plan.inplane_flips, plan.flips) == (4, 16, 4, 8)  # depth starts 0 2 4 5
    assert plan.slices_encoded == 4 * 4 * 9 and "MiB" in plan.describe()


def test_other_predictors_take_the_plain_path() -> None:
    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return torch.cat([x, -x], 1)

    sliding_window_predict(net, torch.randn(1, 8, 16, 16), PATCH, mirror_axes=(0,))
    assert len(calls) == 3 * 2  # 3 depth windows x 2 mirror terms, each the whole predictor
