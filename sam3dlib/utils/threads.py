"""Run a CPU batch function with one sample group per core instead of splitting every op across cores.

PyTorch parallelises inside each op (intra-op threads): every convolution, matmul and layer
norm of a network is split across the cores and joined again. For a network made of many
small ops on small tensors (LiteMedSAM's TinyViT: windows of 49 tokens, row strips) the joins
and the split work cost much of the second core's gain. :func:`map_batch_in_threads` instead
gives each core its own part of the batch: ``workers`` Python threads, each running the
function on one contiguous part with one intra-op thread (its share of them when there are
fewer parts than threads; the ops release the GIL). The result
is the function's on the whole batch up to float32 rounding (each op runs its single-threaded
kernel on fewer samples).

Limit: ``torch.set_num_threads`` in a worker also sets PyTorch's process-wide default until
the caller restores it, so a thread of the caller's program that makes its *first* torch call
while an encode is running starts with one intra-op thread (a review found this; the caller's
own count is always restored, and concurrent encodes give the same outputs).
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


def batch_workers(batch: int, device: torch.device) -> int:
    """How many threads :func:`map_batch_in_threads` should use: one per intra-op thread, at most one per sample
    (fewer samples than threads: each worker gets several intra-op threads).

    1 (run as usual) on a GPU, for a single sample, or with one intra-op thread.
    """
    if device.type != "cpu":
        return 1
    return max(1, min(batch, torch.get_num_threads()))


def map_batch_in_threads(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                         workers: int) -> torch.Tensor:
    """``fn(x)`` computed as ``cat([fn(part) for part in x.tensor_split(workers)])``, the parts in parallel.

    Args:
        fn: a function of a batch (dim 0) whose samples do not interact (an encoder in eval mode).
        x: the batch, ``N x ...``.
        workers: threads (capped at ``N``; <= 1: ``fn(x)`` directly). Each worker sets its share
            of the caller's intra-op threads (``torch.set_num_threads``, at least 1: one each when
            there are as many workers as threads) and runs under the caller's grad and inference
            modes and CPU autocast (all thread-local in PyTorch); the caller's thread count is
            restored afterwards, also when ``fn`` raises (the first worker's exception is re-raised).

    Returns:
        The parts' outputs concatenated along dim 0, in order.
    """
    workers = min(workers, x.shape[0])
    if workers <= 1:
        return fn(x)
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    autocast, autocast_dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    previous = torch.get_num_threads()

    share = max(1, previous // workers)

    def work(part: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(share)
        with (torch.inference_mode(inference), torch.set_grad_enabled(grad),
              torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast)):
            return fn(part)

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="sam3d-batch") as pool:
            outs = list(pool.map(work, x.tensor_split(workers)))
    finally:
        torch.set_num_threads(previous)
    return torch.cat(outs)
