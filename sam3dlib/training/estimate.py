"""Before a long run: its expected wall time and peak memory on the chosen device, from timed steps.

:func:`estimate_training` builds the run's model on the device, times a few training steps on
random inputs of the run's batch and crop (one warm-up step first, not counted) and a
validation forward, and extrapolates with the run's schedule:

    wall = epochs x iterations_per_epoch x (step)
         + (epochs / val_every) x val_iterations x (forward)
         + cached mode only: the training slices x (encoding one slice)   [the feature store, once]

A step is the encoder forward (online mode) plus one decoder update
(:func:`sam3dlib.training.step.decoder_update`); data loading, augmentation, checkpoints and
the test-set prediction are not included, so the figure is a lower bound of a run's time.
Peak memory is the device's peak allocation during the timed steps (CUDA) or the process's
peak resident set (CPU, which includes what was resident before).
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch

from sam3dlib.modeling.factory import build_model, torch_dtype
from sam3dlib.training.optim import make_optimizer
from sam3dlib.training.step import decoder_update, make_loss
from sam3dlib.utils.devices import resolve_device


@dataclass(frozen=True)
class RunEstimate:
    """An extrapolated run (see the module docstring); seconds and bytes."""

    device: str
    step_s: float
    forward_s: float
    encode_slice_s: float
    steps: int
    val_batches: int
    cache_slices: int
    peak_bytes: int
    timed_steps: int

    @property
    def wall_s(self) -> float:
        return self.steps * self.step_s + self.val_batches * self.forward_s + self.cache_slices * self.encode_slice_s

    def describe(self) -> str:
        """One line: the expected wall time and peak memory, what they are based on."""
        cache = (f" + {self.cache_slices} slices encoded once ({self.encode_slice_s * 1e3:.1f} ms each)"
                 if self.cache_slices else "")
        return (f"estimate on {self.device}: {_hours(self.wall_s)} wall, peak memory {self.peak_bytes / 2**30:.2f} GiB "
                f"({self.steps} steps x {self.step_s:.3f} s + {self.val_batches} validation batches x "
                f"{self.forward_s:.3f} s{cache}; from {self.timed_steps} timed steps on random inputs, without data "
                "loading and test prediction: a lower bound)")


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_training(config, spec, device: str | None = None, timed_steps: int = 2,
                      cache_slices: int = 0) -> RunEstimate:
    """Time ``timed_steps`` training steps of ``config`` on ``spec``'s data shape and extrapolate.

    Args:
        config: the run's :class:`~sam3dlib.config.ExperimentConfig`.
        spec: the dataset's spec (channels, classes).
        device: overrides ``config.device``.
        timed_steps: steps timed after one warm-up step.
        cache_slices: in cached mode, the training slices the feature store encodes once.

    Returns:
        :class:`RunEstimate`.
    """
    dev = resolve_device(device or config.device)
    model = build_model(config, spec).to(dev)
    decoder = model.decoder.train()
    optimizer = make_optimizer(config, decoder.parameters())
    loss_fn = make_loss(config)
    dtype = torch_dtype(config.decoder_dtype)
    d, h, w = config.patch_size
    g = torch.Generator().manual_seed(0)
    volume = torch.randn(config.batch_size, spec.num_channels, d, h, w, generator=g).to(dev)
    target = torch.randint(0, spec.num_classes, (config.batch_size, d, h, w), generator=g).to(dev)
    online = config.encoder_mode == "online"
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.no_grad():
        t0 = time.perf_counter()
        features = model.encode(volume)
        _sync(dev)
    encode_s = time.perf_counter() - t0
    times = []
    for i in range(timed_steps + 1):
        _sync(dev)
        t0 = time.perf_counter()
        feats = model.encode(volume) if online else features
        decoder_update(decoder, feats, target, optimizer, loss_fn, config.grad_clip, dtype)
        _sync(dev)
        if i:
            times.append(time.perf_counter() - t0)
    decoder.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        decoder(model.encode(volume) if online else features)
        _sync(dev)
    forward_s = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    n_slices = config.batch_size * spec.num_channels * d
    validations = -(-config.epochs // max(1, config.val_every))
    return RunEstimate(
        device=str(dev), step_s=sum(times) / len(times), forward_s=forward_s,
        encode_slice_s=encode_s / n_slices if not online else 0.0,
        steps=config.epochs * config.iterations_per_epoch, val_batches=validations * config.val_iterations,
        cache_slices=0 if online else int(cache_slices), peak_bytes=int(peak), timed_steps=timed_steps,
    )


def training_slices(store, config) -> int:
    """Slices the cached mode's feature store encodes once: depth x channels over the training cases."""
    import numpy as np

    from sam3dlib.data.store import case_paths

    if config.encoder_mode != "cached":
        return 0
    split = store.split(config.protocol, fold=config.fold)
    total = 0
    for c in split.train:
        if c in set(store.case_ids):
            shape = np.load(case_paths(store.root, c)["image"], mmap_mode="r").shape  # C x D x H x W
            total += shape[0] * shape[1]
    return total


__all__ = ["RunEstimate", "estimate_training", "training_slices"]
