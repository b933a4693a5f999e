"""What one job of a grid is expected to cost, from the machine that submits it: GPU-hours and memory.

``sam3d reproduce --dry-run`` lists it per job. The submitting machine (a login node) usually has
no GPU of the nodes' kind, so nothing is timed here; a run's cost timed on the device you are on
is :func:`sam3dlib.training.estimate.estimate_training` (what ``train`` and a local
``reproduce`` print). Two bases, always named in :attr:`RunEstimate.basis`:

* **measured**: the run folder already holds epochs of this run (``log.csv``, seconds per
  epoch on the device it ran on): the remaining epochs at their mean speed.
* **model** (nothing measured yet): floating-point operations per step divided by an
  *assumed* sustained device throughput (:data:`ASSUMED_TFLOPS`, 20 TFLOP/s, a stated
  assumption for one recent data-centre GPU in float32/TF32, not a measurement; pass the
  rate of your card). Operations per step:

  - encoder (``online`` mode only; ``cached`` encodes each case once, not counted): each of
    the ``batch x channels x depth`` slices costs ``24 * width^2 * depth_vit`` operations per
    token (query/key/value, projection and MLP matmuls, forward), tokens ``(side / 16)^2``
    at the encoder's input side; for ViT-B at 176 px this gives 20.6 GFLOP, the count of
    ``docs/PERFORMANCE.md`` (21.5 GFLOP per slice, attention included). LiteMedSAM is
    counted as ViT-B (no closed form for its convolutions).
  - decoder and loss, forward and backward: :data:`DECODER_FLOP_PER_VOXEL` per voxel of the
    batch's crops (59 GFLOP counted for the Synapse decoder step, batch 2 x 8 x 176 x 176,
    ``docs/PERFORMANCE.md`` item 1b).
  - validation batches count as a third of a training step (forward only), evaluation and
    start-up are not counted.

Peak memory: the decoder's activations measured per voxel
(:func:`sam3dlib.modeling.memory.training_bytes_per_voxel`) times the batch's voxels, its
weights, gradients and momentum, the encoder's float32 weights and :data:`CUDA_CONTEXT_GB`.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from sam3dlib.config import ExperimentConfig
from sam3dlib.data.specs import DatasetSpec

#: assumed sustained throughput of one GPU (TFLOP/s) when no step was measured (a stated assumption)
ASSUMED_TFLOPS = 20.0
#: decoder + loss operations per crop voxel of a training step (59 GFLOP / (2 x 8 x 176 x 176))
DECODER_FLOP_PER_VOXEL = 59e9 / (2 * 8 * 176 * 176)
#: CUDA context and allocator slack added to every estimate (GB)
CUDA_CONTEXT_GB = 0.5
#: validation batches cost about one forward pass of a training step
VALIDATION_STEP_COST = 1 / 3
_GB = 1e9


@dataclass(frozen=True)
class RunEstimate:
    """The expected cost of one run.

    Attributes:
        steps: optimizer steps still to run (validation batches not included).
        gpu_hours: expected device hours for them (one GPU).
        memory_gb: expected peak device memory of a training step (GB, 1e9 bytes).
        basis: ``measured (N epochs in log.csv)`` or ``model (X TFLOP/s assumed)``.
    """

    steps: int
    gpu_hours: float
    memory_gb: float
    basis: str

    def describe(self) -> str:
        return f"{self.gpu_hours:.2f} GPU-h, {self.memory_gb:.1f} GB ({self.basis})"


def encoder_flops_per_slice(config: ExperimentConfig) -> float:
    """Forward operations of the frozen encoder on one slice (the ViT formula of the module docstring)."""
    from sam3dlib.modeling.encoders import encoder_input_size, vit_config

    vit = vit_config(config.encoder) or vit_config("vit_b")
    h, w = encoder_input_size(config.encoder, tuple(config.patch_size[1:]), config.encoder_scale)
    tokens = math.ceil(h / 16) * math.ceil(w / 16)
    return 24.0 * vit.embed_dim ** 2 * vit.depth * tokens


def step_flops(config: ExperimentConfig, spec: DatasetSpec) -> float:
    """Operations of one training step (encoder when ``online``, decoder + loss forward and backward)."""
    d, h, w = config.patch_size
    flops = DECODER_FLOP_PER_VOXEL * config.batch_size * d * h * w
    if config.encoder_mode == "online":
        flops += encoder_flops_per_slice(config) * config.batch_size * spec.num_channels * d
    return flops


def peak_memory_gb(config: ExperimentConfig, spec: DatasetSpec) -> float:
    """Expected peak device memory of a float32 training step (GB)."""
    from sam3dlib.modeling.encoders import vit_config
    from sam3dlib.modeling.memory import decoder_state_bytes, training_bytes_per_voxel

    d, h, w = config.patch_size
    activations = training_bytes_per_voxel(spec.num_channels, spec.num_classes, config.deep_supervision)
    total = activations * config.batch_size * d * h * w + decoder_state_bytes(spec.num_channels, spec.num_classes)
    if config.encoder_mode == "online":
        vit = vit_config(config.encoder) or vit_config("vit_b")
        total += 4 * 12 * vit.embed_dim ** 2 * vit.depth  # float32 weights of the ViT blocks
    return total / _GB + CUDA_CONTEXT_GB


def measured_epoch_seconds(run_dir: str | Path) -> list[float]:
    """Seconds of each epoch logged in ``run_dir/log.csv`` (empty when there is none)."""
    path = Path(run_dir) / "log.csv"
    try:
        with path.open(newline="") as f:
            return [float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds")]
    except (OSError, ValueError, KeyError):
        return []


def estimate_run(config: ExperimentConfig, spec: DatasetSpec, run_dir: str | Path | None = None,
                 tflops: float = ASSUMED_TFLOPS) -> RunEstimate:
    """The expected GPU-hours and peak memory of ``config`` (measured speed when ``run_dir`` has epochs).

    Args:
        config: the run's configuration (crop, batch, epochs, steps per epoch, encoder mode).
        spec: its dataset (channels, classes).
        run_dir: the run's folder; its ``log.csv`` epochs, if any, give the measured basis.
        tflops: the device's sustained TFLOP/s for the model basis.

    Raises:
        ValueError: ``tflops`` is not positive.
    """
    if not tflops > 0:
        raise ValueError(f"tflops must be positive, got {tflops}")
    memory = peak_memory_gb(config, spec)
    done = measured_epoch_seconds(run_dir) if run_dir is not None else []
    remaining = max(config.epochs - len(done), 0)
    steps = remaining * config.iterations_per_epoch
    if done:
        hours = remaining * (sum(done) / len(done)) / 3600
        return RunEstimate(steps, hours, memory, f"measured ({len(done)} epochs in log.csv)")
    val_batches = (remaining // config.val_every) * config.val_iterations
    seconds = step_flops(config, spec) * (steps + VALIDATION_STEP_COST * val_batches) / (tflops * 1e12)
    return RunEstimate(steps, seconds / 3600, memory, f"model ({tflops:g} TFLOP/s assumed)")


__all__ = ["ASSUMED_TFLOPS", "RunEstimate", "encoder_flops_per_slice", "estimate_run", "measured_epoch_seconds",
           "peak_memory_gb", "step_flops"]
