"""The estimate printed before a long run: timed steps extrapolated with the run's schedule."""
from __future__ import annotations

import pytest

from sam3dlib.data.specs import get_spec
from sam3dlib.study.registry import get_config
from sam3dlib.training.estimate import estimate_training, training_slices


def test_estimate_extrapolates_the_schedule(one_thread):
    cfg = get_config("table2_acdc", "smoke", patch_size=(4, 32, 32), epochs=10, iterations_per_epoch=7,
                     val_iterations=3, val_every=5, batch_size=1)
    est = estimate_training(cfg, get_spec("acdc"), timed_steps=1, cache_slices=40)
    assert est.steps == 70 and est.val_batches == 2 * 3 and est.cache_slices == 40
    assert est.step_s > 0 and est.forward_s > 0 and est.encode_slice_s > 0 and est.peak_bytes > 2**20
    assert est.wall_s == pytest.approx(70 * est.step_s + 6 * est.forward_s + 40 * est.encode_slice_s)
    text = est.describe()
    assert text.startswith("estimate on cpu:") and "GiB" in text and "70 steps x" in text and "lower bound" in text
    online = estimate_training(cfg.replace(encoder_mode="online"), get_spec("acdc"), timed_steps=1, cache_slices=40)
    assert online.cache_slices == 0 and online.encode_slice_s == 0.0


def test_training_slices_of_a_store(synapse_store):
    from sam3dlib.data.store import PreparedDataset

    store = PreparedDataset(synapse_store)
    cfg = get_config("table1_synapse", "smoke")
    split = store.split(cfg.protocol)
    want = sum(store.image(c).shape[0] * store.image(c).shape[1] for c in split.train if c in store.case_ids)
    assert training_slices(store, cfg) == want > 0
    assert training_slices(store, cfg.replace(encoder_mode="online")) == 0


def test_reproduce_prints_estimate_before_work(one_thread):
    from sam3dlib.study.reproduce import estimate_table

    lines = estimate_table(3, "smoke", None, None, "0 1")
    assert len(lines) == 1 and lines[0].startswith("Table 3 SAM3D [smoke] (x 2 seeds): estimate on")
