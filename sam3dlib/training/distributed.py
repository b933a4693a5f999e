"""The ``torchrun`` process group (one process per GPU, gloo on CPU) and each rank's share of a batch."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sam3dlib.utils.devices import is_cuda
from sam3dlib.utils.errors import ConfigError


@dataclass
class DistContext:
    """Rank information of this process (single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.initialized:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (picklable; single process: ``obj``)."""
        if not self.initialized:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device: str) -> DistContext:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), else single process.

    Args:
        device: the config's device (:func:`sam3dlib.utils.devices.parse_device`); nccl on CUDA, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = is_cuda(device)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local_rank, True)


def shard_batches(iterations: int, batch_size: int, ctx: DistContext) -> list[int]:
    """Item indices of this rank: item ``it * B + p`` goes to rank ``p % world``.

    The global batch of ``batch_size`` items is split over the ranks, so the optimisation
    (batch size, steps per epoch) is that of one process; batch_size must be divisible by
    the world size.
    """
    if batch_size % ctx.world_size:
        raise ConfigError(
            f"batch_size {batch_size} cannot be split over {ctx.world_size} processes; "
            f"set batch_size to a multiple of {ctx.world_size} (--set batch_size=...)"
        )
    return [it * batch_size + p for it in range(iterations) for p in range(batch_size) if p % ctx.world_size == ctx.rank]
