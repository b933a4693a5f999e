"""Slices split between single-threaded workers (sam3dlib.utils.threads): same result, caller's state kept."""
from __future__ import annotations

import pytest
import torch

from sam3dlib.utils.threads import batch_workers, map_batch_in_threads


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    """A batch function that also records the intra-op threads and grad mode it ran with."""
    seen = torch.tensor([[torch.get_num_threads(), torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                          torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16]])
    return torch.cat([x.sum(1, keepdim=True) * 2, seen.expand(x.shape[0], -1).float()], 1)


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_parts_are_concatenated_in_order(workers):
    x = torch.arange(15.0).view(5, 3)
    out = map_batch_in_threads(_per_sample, x, workers)
    assert torch.equal(out[:, 0], x.sum(1) * 2)
    threads = torch.get_num_threads()
    share = max(1, threads // min(workers, 5)) if workers > 1 else threads
    assert torch.equal(out[:, 1], torch.full((5,), float(share)))


def test_workers_get_one_thread_and_the_callers_modes():
    """Grad, inference mode and autocast are thread-local in PyTorch: each worker must take the caller's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.ones(4, 2)
        with torch.no_grad():
            no_grad = map_batch_in_threads(_per_sample, x, 2)
        with torch.inference_mode():
            inference = map_batch_in_threads(_per_sample, x, 2)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = map_batch_in_threads(_per_sample, x, 2)
        assert no_grad[:, 1:].tolist() == [[1.0, 0.0, 0.0, 0.0]] * 4
        assert inference[:, 1:].tolist() == [[1.0, 0.0, 1.0, 0.0]] * 4
        assert autocast[:, 1:].tolist() == [[1.0, 0.0, 0.0, 1.0]] * 4
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(previous)


def test_fewer_parts_than_threads_share_the_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        out = map_batch_in_threads(_per_sample, torch.ones(2, 3), 4)  # 2 samples: 2 workers x 2 threads
        assert out[:, 1].tolist() == [2.0, 2.0] and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(previous)


def test_an_error_in_a_worker_is_raised_and_threads_restored():
    previous = torch.get_num_threads()

    def fails(x):
        if x[0, 0] > 0:
            raise ValueError("bad part")
        return x

    with pytest.raises(ValueError, match="bad part"):
        map_batch_in_threads(fails, torch.tensor([[0.0], [1.0]]), 2)
    assert torch.get_num_threads() == previous


def test_batch_workers():
    cpu = torch.device("cpu")
    assert batch_workers(1, cpu) == 1
    assert batch_workers(64, cpu) == torch.get_num_threads()
    assert batch_workers(64, torch.device("cuda")) == 1
