"""Out-of-memory handling: prediction retries with less memory, training says what to lower.

* Prediction (:func:`run_with_oom_fallback`): on a GPU out-of-memory error the sliding-window
  call is retried with half the windows per batch (down to 1), then once more on the CPU;
  every retry emits a :class:`ResourceWarning` saying what changed.
* Training (:func:`training_oom_error`): an out-of-memory error in a training step becomes a
  :class:`TrainingOOMError` naming the settings to lower (``batch_size``, ``patch_size``,
  ``encoder_mode=cached``, ``encoder_dtype=bfloat16``, ``encoder_chunk_size``).
"""
from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class TrainingOOMError(RuntimeError):
    """Training ran out of (GPU) memory; the message names the settings to lower."""


def is_oom_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error of torch (CUDA, MPS or CPU allocator)."""
    oom_types = tuple(t for t in (getattr(torch.cuda, "OutOfMemoryError", None),
                                  getattr(torch, "OutOfMemoryError", None)) if t is not None)
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower())


def free_memory() -> None:
    """Drop Python references and the CUDA cache after an OOM, before retrying."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fallback_plan(sw_batch_size: int, device: str | torch.device) -> list[tuple[int, torch.device]]:
    """The (sw_batch_size, device) attempts: the given ones, halved batches, then CPU with batch 1."""
    device = torch.device(device)
    plan = [(int(sw_batch_size), device)]
    b = int(sw_batch_size)
    while b > 1:
        b = max(1, b // 2)
        plan.append((b, device))
    if device.type != "cpu":
        plan.append((1, torch.device("cpu")))
    return plan


def run_with_oom_fallback(fn: Callable[[int, torch.device], T], sw_batch_size: int, device: str | torch.device,
                          what: str = "prediction", on_device_change: Callable[[torch.device], Any] | None = None) -> T:
    """Call ``fn(sw_batch_size, device)``, retrying with less memory after an out-of-memory error.

    Args:
        fn: the work, e.g. ``lambda b, dev: sliding_window_predict(..., sw_batch_size=b, device=dev)``.
        sw_batch_size: windows per forward pass to start with.
        device: where to start.
        what: named in the warnings.
        on_device_change: called with the new device before the first attempt on another device
            (e.g. to move the model there).

    Returns:
        The result of the first attempt that fits.

    Raises:
        The last out-of-memory error when even the CPU attempt fails; other errors at once.
    """
    plan = fallback_plan(sw_batch_size, device)
    current = plan[0][1]
    for i, (batch, dev) in enumerate(plan):
        if dev != current:
            if on_device_change is not None:
                on_device_change(dev)
            current = dev
        try:
            return fn(batch, dev)
        except Exception as exc:  # noqa: BLE001 - only OOM is retried
            if not is_oom_error(exc) or i + 1 == len(plan):
                raise
            free_memory()
            nb, nd = plan[i + 1]
            change = f"sw_batch_size {batch} -> {nb}" if nd == dev else f"device {dev} -> {nd} (sw_batch_size {nb})"
            warnings.warn(f"{what}: out of memory on {dev} with sw_batch_size={batch} "
                          f"({str(exc).splitlines()[0][:120]}); retrying with {change}", ResourceWarning, stacklevel=2)
    raise AssertionError("unreachable")  # pragma: no cover


def training_oom_error(exc: BaseException, config: Any, where: str = "training step") -> TrainingOOMError:
    """A :class:`TrainingOOMError` for ``exc`` naming the config settings that reduce memory."""
    tips = []
    if config.batch_size > 1:
        tips.append(f"--set batch_size={max(1, config.batch_size // 2)}")
    d, h, w = config.patch_size
    tips.append(f"--set patch_size={max(1, d // 2)},{h},{w} (a smaller patch_size)")
    if config.encoder_mode != "cached":
        tips.append("--set encoder_mode=cached (encode once, train the decoder on stored features)")
    if config.encoder_dtype != "bfloat16":
        tips.append("--set encoder_dtype=bfloat16")
    if config.encoder_chunk_size > 1:
        tips.append(f"--set encoder_chunk_size={max(1, config.encoder_chunk_size // 4)}")
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return TrainingOOMError(
        f"out of memory in the {where} of {config.name} (batch_size={config.batch_size}, "
        f"patch_size={tuple(config.patch_size)}, encoder={config.encoder}, encoder_mode={config.encoder_mode}, "
        f"encoder_dtype={config.encoder_dtype}): lower one of these settings: " + "; ".join(tips)
        + f". Resume with --resume after changing device/encoder_chunk_size only; other changes need a new --out. "
        f"[{first}]"
    )


__all__ = ["TrainingOOMError", "fallback_plan", "free_memory", "is_oom_error", "run_with_oom_fallback",
           "training_oom_error"]
