"""Measurement primitives of ``run_bench.py``: FLOP counts, timed steps, peaks, memory.

Every step measurement runs in its own child process (``run_bench.py --child SPEC``) so that
the peak memory of one configuration (``VmHWM`` on CPU, ``max_memory_allocated`` on GPU) is
not mixed with another's.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam3dlib.config import ExperimentConfig
from sam3dlib.data.specs import get_spec
from sam3dlib.modeling.build import build_sam3d
from sam3dlib.modeling.constants import EMBED_CHANNELS, PATCH_SIZE
from sam3dlib.modeling.encoders import build_image_encoder, get_encoder_spec, load_encoder_state
from sam3dlib.modeling.factory import torch_dtype
from sam3dlib.modeling.fast_attention import enable_fast_attention
from sam3dlib.modeling.losses import sam3d_loss
from sam3dlib.modeling.sam3d import encode_slices
from sam3dlib.training.optim import make_optimizer
from sam3dlib.training.step import decoder_update, make_loss
from sam3dlib.utils.host_memory import reuse_freed_host_memory

DATASETS = ("synapse", "acdc", "lung", "brats")
#: autocast settings compared (``torch_dtype(name)``: None = float32, no autocast)
DTYPE_NAMES = ("float32", "bfloat16")


# ----------------------------------------------------------------------------- machine
def pick_device(name: str = "auto") -> torch.device:
    """The torch device of a device name (:func:`sam3dlib.utils.devices.resolve_device`)."""
    from sam3dlib.utils.devices import resolve_device

    return resolve_device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model and flags relevant to bf16, thread count, torch version, GPU name."""
    flags, model = set(), platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    info = {
        "device": str(device),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
        "avx512f": "avx512f" in flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def loadavg() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)
    return None


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Measured square-matmul FLOP/s (best of repeated ``n x n`` products)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        a @ b
        sync(device)
        dt = time.perf_counter() - t
        best = max(best, 2 * n**3 / dt)
        if time.perf_counter() > t_end:
            return best


# ----------------------------------------------------------------------------- FLOPs
def vit_flops_per_slice(encoder: str, hw: tuple[int, int], fast: bool) -> float:
    """Multiply-add FLOPs (x2) of one slice through SAM's ViT encoder and neck.

    ``fast=False`` counts segment-anything's own arithmetic (windowed blocks on tokens
    zero-padded to 14 x 14); ``fast=True`` the :mod:`sam3dlib.modeling.fast_attention` path (one
    padded window collapsed to the real tokens plus one merged key).
    """
    cfg = get_encoder_spec(encoder).build.config
    e, ws = cfg.embed_dim, cfg.window_size
    th, tw = hw[0] // PATCH_SIZE, hw[1] // PATCH_SIZE
    n = th * tw
    total = n * 3 * PATCH_SIZE**2 * e * 2  # patch embedding
    for i in range(cfg.depth):
        if i in cfg.global_attn_indexes:
            groups, q_len, k_len, rows = 1, n, n, n
        elif fast and th <= ws and tw <= ws:
            groups, q_len, k_len, rows = 1, n, n + (1 if n < ws * ws else 0), n
        else:
            groups = math.ceil(th / ws) * math.ceil(tw / ws)
            q_len = k_len = ws * ws
            rows = groups * q_len
        total += rows * e * 3 * e * 2 + rows * e * e * 2  # qkv, proj
        total += groups * 2 * q_len * k_len * e * 2  # q k^T, attn v
        sides = th + tw if i in cfg.global_attn_indexes else 2 * ws
        total += groups * q_len * sides * e * 2  # decomposed rel-pos einsums (all heads)
        total += n * e * 4 * e * 2 * 2  # MLP
    total += n * e * EMBED_CHANNELS * 2 + n * EMBED_CHANNELS * EMBED_CHANNELS * 9 * 2  # neck
    return float(total)


def decoder_step_flops(dataset: str, batch: int, depth: int, hw: tuple[int, int], fused_upsample: bool = True) -> float:
    """FLOPs of the decoder's forward + backward, counted by torch's FlopCounterMode.

    Counted on one slice of one sample and scaled by ``batch * depth`` (convolutions are
    linear in the number of output voxels). ``fused_upsample=False`` counts the literal
    upsample-then-convolve decoder.
    """
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_spec(dataset)
    model = build_sam3d(spec.num_classes, spec.num_channels, hw, "vit_tiny")
    model.train()
    model.decoder.fused_upsample = fused_upsample
    th, tw = hw[0] // PATCH_SIZE, hw[1] // PATCH_SIZE
    feats = torch.randn(1, spec.num_channels * EMBED_CHANNELS, 1, th, tw)
    target = torch.randint(0, spec.num_classes, (1, 1, *hw))
    counter = FlopCounterMode(display=False)
    with counter:
        sam3d_loss()(model.decoder(feats), target).backward()
    return float(counter.get_total_flops()) * batch * depth


# ----------------------------------------------------------------------------- steps
@dataclass
class StepSpec:
    """One child-process measurement.

    mode: ``baseline`` (the paper's step), ``online``, ``cached``, ``floor`` (decoder on
    in-memory features) or ``encoder`` (encoder throughput only). ``fused_upsample``,
    ``channels_last`` and ``one_hot_loss`` select the decoder and loss variants (the paper's
    code: ``False``, ``False``, ``True``); ``reuse_host_memory`` applies
    :func:`sam3dlib.utils.host_memory.reuse_freed_host_memory` in the child (CPU); ``trace_memory`` adds one step under the profiler's
    allocation tracking (CPU) for the peak of live tensor bytes.
    """

    mode: str
    dataset: str = "synapse"
    batch: int | None = None
    depth: int | None = None
    hw: tuple[int, int] | None = None
    encoder: str = "vit_b"
    encoder_weights: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    encoder_dtype: str = "float32"
    decoder_dtype: str = "float32"
    fast_attention: bool = True
    fused_upsample: bool = True
    channels_last: bool = False
    one_hot_loss: bool = False
    reuse_host_memory: bool = True
    trace_memory: bool = False
    chunk: int = 32
    reps: int = 1
    warmup: bool = True
    slices: int = 8  # encoder mode
    extra: dict = field(default_factory=dict)

    def resolved(self) -> StepSpec:
        spec = get_spec(self.dataset)
        d, h, w = spec.patch_size
        return StepSpec(**{**asdict(self), "batch": self.batch or spec.batch_size, "depth": self.depth or d,
                           "hw": tuple(self.hw or (h, w))})


def peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_bytes": int(torch.cuda.max_memory_allocated(device)), "peak_kind": "cuda max_memory_allocated"}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"peak_bytes": int(line.split()[1]) * 1024, "peak_kind": "process peak RSS (VmHWM)"}
    import resource

    return {"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_kind": "ru_maxrss"}


def tensor_peak_bytes(fn: Callable[[], Any], device: torch.device, resident_bytes: int) -> int:
    """Peak of live tensor bytes while ``fn`` runs (``resident_bytes`` already live before it).

    CUDA: ``max_memory_allocated``. CPU: ``resident_bytes`` plus the running sum of the
    profiler's per-op allocation records, the same quantity (the process RSS also holds the
    Python/torch runtime and freed pages the allocator keeps, so it is not used for fits).
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage  # allocations minus frees inside the op (or a bare free)
        peak = max(peak, live)
    return int(resident_bytes + peak)


def _state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


class _Timer:
    def __init__(self, device: torch.device) -> None:
        self.device, self.parts = device, {}

    @contextlib.contextmanager
    def part(self, name: str):
        sync(self.device)
        t = time.perf_counter()
        yield
        sync(self.device)
        self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t


def _baseline_encode(spec: StepSpec, volume: torch.Tensor, timer: _Timer, device: torch.device) -> torch.Tensor:
    """What the paper's forward does: build ViT-B, load the checkpoint, one call per slice (batch B)."""
    with timer.part("load_s"):
        vit = build_image_encoder(spec.encoder, spec.hw)
        vit.load_state_dict(load_encoder_state(spec.encoder_weights, spec.encoder, spec.hw))
        vit.to(device).eval()
    with timer.part("encode_s"), torch.no_grad():
        b, c, d, h, w = volume.shape
        per_slice = []
        for z in range(d):
            chans = [vit(volume[:, ci, z][:, None].expand(-1, 3, -1, -1)) for ci in range(c)]
            per_slice.append(torch.cat(chans, dim=1))  # B x (C*256) x h x w
        return torch.stack(per_slice, dim=2)


def _cached_reader(spec: StepSpec):
    """A ``CachedPatchDataset`` over a ``FeatureCache`` built through its public API.

    The entries are written by ``FeatureCache.build_case`` with a random ``vit_tiny`` stand-in
    model (same 256-channel float16 layout, seconds instead of minutes); the values do not
    matter for reading speed, the layout and the read path are the product's.
    """
    from sam3dlib.training.data import CachedPatchDataset
    from sam3dlib.training.feature_cache import CacheSettings, FeatureCache

    ds = get_spec(spec.dataset)
    h, w = spec.hw
    settings = CacheSettings(spec.encoder, "random init (benchmark)", (h, w), (h // 2, w // 2),
                             spec.encoder_dtype, ds.num_channels)
    cache = FeatureCache(spec.cache_dir, settings)
    stand_in = build_sam3d(ds.num_classes, ds.num_channels, (h, w), "vit_tiny")
    case_depth = spec.depth * 2
    rng = np.random.default_rng(0)
    labels = {}
    for cid in ("bench_000", "bench_001"):
        image = rng.standard_normal((ds.num_channels, case_depth, h, w + w // 2)).astype(np.float32)
        image_path = Path(spec.cache_dir) / f"{cid}_image.npy"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(image_path, image)
        cache.build_case(cid, image, image_path, stand_in)
        label = np.zeros((case_depth, h, w + w // 2), np.uint8)
        label[case_depth // 4: case_depth // 2, h // 4: h // 2, w // 4: w // 2] = 1
        labels[cid] = label
    cache.build_zero_slice(stand_in)

    class _Labels:
        root = Path(spec.cache_dir)

        def label(self, cid):
            return labels[cid]

    dataset = CachedPatchDataset(cache, _Labels(), list(labels), (spec.depth, h, w), spec.batch, iterations=1000, seed=0)

    def read(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [dataset[step * spec.batch + i] for i in range(spec.batch)]
        return torch.stack([it["features"] for it in items]), torch.stack([it["label"] for it in items])

    return read


def step_config(spec: StepSpec) -> ExperimentConfig:
    """The paper profile's training settings at the spec's sizes: what the timed step trains with.

    Optimizer (SGD, lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5), gradient clip,
    the dataset's batch Dice and the decoder dtype come from :class:`ExperimentConfig`, so the
    benchmark's step is :func:`sam3dlib.training.step.decoder_update` with the trainer's values.
    """
    spec = spec.resolved()
    return ExperimentConfig(name=f"benchmark_{spec.dataset}", table="-", dataset=spec.dataset,
                            patch_size=(spec.depth, *spec.hw), batch_size=spec.batch,
                            batch_dice=get_spec(spec.dataset).batch_dice, decoder_dtype=spec.decoder_dtype,
                            encoder_dtype=spec.encoder_dtype)


def run_step_spec(spec: StepSpec) -> dict[str, Any]:
    """Build what ``spec`` needs, warm up, time ``reps`` steps; return times and peak memory."""
    spec = spec.resolved()
    device = pick_device(spec.device)
    ds = get_spec(spec.dataset)
    b, d, (h, w), c = spec.batch, spec.depth, spec.hw, ds.num_channels
    torch.manual_seed(0)
    enc_dtype, dec_dtype = torch_dtype(spec.encoder_dtype), torch_dtype(spec.decoder_dtype)
    if spec.reuse_host_memory:
        reuse_freed_host_memory(device.type)
    if spec.mode == "encoder":
        return _encoder_throughput(spec, device, enc_dtype)
    # only the online mode keeps an encoder in the model; the others get a tiny stand-in (unused)
    model_encoder = spec.encoder if spec.mode == "online" else "vit_tiny"
    model = build_sam3d(ds.num_classes, c, (h, w), model_encoder, fast_attention=spec.fast_attention).to(device)
    model.train()
    model.decoder.fused_upsample, model.decoder.channels_last = spec.fused_upsample, spec.channels_last
    config = step_config(spec)
    optimizer = make_optimizer(config, model.decoder.parameters())
    loss_fn = make_loss(config, one_hot=spec.one_hot_loss)

    def update(feats: torch.Tensor, labels: torch.Tensor) -> None:  # the trainer's step, as it trains
        decoder_update(model.decoder, feats, labels, optimizer, loss_fn, config.grad_clip, dec_dtype)

    pin = device.type == "cuda"
    volume = torch.randn(b, c, d, h, w)
    target = torch.randint(0, ds.num_classes, (b, d, h, w))
    if pin:
        volume, target = volume.pin_memory(), target.pin_memory()
    in_memory = torch.randn(b, c * EMBED_CHANNELS, d, h // 16, w // 16, device=device)
    reader = _cached_reader(spec) if spec.mode == "cached" else None

    def step(i: int, timer: _Timer, depth: int) -> None:
        x = volume[:, :, :depth].to(device, non_blocking=True)
        y = target[:, :depth].to(device, non_blocking=True)
        if spec.mode == "baseline":
            feats = _baseline_encode(spec, x, timer, device)
        elif spec.mode == "online":
            with timer.part("encode_s"):
                feats = encode_slices(model.encoder, x, spec.chunk, enc_dtype)
        elif spec.mode == "cached":
            with timer.part("read_s"):
                f, y = reader(i)
                feats = f[:, :, :depth].to(device, non_blocking=True)
                y = y[:, :depth].to(device, non_blocking=True)
        else:
            feats = in_memory[:, :, :depth]
        with timer.part("decoder_s"):
            update(feats, y)

    if spec.warmup:  # oneDNN builds its kernels per shape (~1 s each on CPU): warm the exact shapes
        if spec.mode in ("online", "baseline"):  # the encoder on one slice, the decoder at full shape
            if spec.mode == "online":  # one full encoder call (oneDNN sets up per batch shape)
                first_call = volume.reshape(1, 1, b * c * d, h, w)[:, :, : min(b * c * d, spec.chunk)]
                encode_slices(model.encoder, first_call.to(device), spec.chunk, enc_dtype)
            else:
                _baseline_encode(spec, volume[:1, :, :1].to(device), _Timer(device), device)
            update(in_memory, target.to(device))
        else:
            step(0, _Timer(device), d)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, parts = [], []
    for i in range(spec.reps):
        timer = _Timer(device)
        sync(device)
        t = time.perf_counter()
        step(i + 1, timer, d)
        sync(device)
        times.append(time.perf_counter() - t)
        parts.append(timer.parts)
    mean_parts = {k: float(np.mean([p.get(k, 0.0) for p in parts])) for k in parts[0]}
    result = {"spec": asdict(spec), "times_s": times, "step_s": float(np.min(times)), "parts_s": mean_parts,
              **peak_memory(device)}
    if spec.trace_memory:  # after the timed steps, so the profiler's overhead is not timed
        resident = _state_bytes(model, optimizer) + volume.nbytes + target.nbytes + in_memory.nbytes
        result["tensor_peak_bytes"] = tensor_peak_bytes(lambda: step(spec.reps + 1, _Timer(device), d), device, resident)
    return result


def _encoder_throughput(spec: StepSpec, device: torch.device, dtype: torch.dtype | None) -> dict[str, Any]:
    h, w = spec.hw
    vit = build_image_encoder(spec.encoder, (h, w)).to(device).eval()
    if spec.fast_attention:
        enable_fast_attention(vit)
    per_call = spec.chunk
    x = torch.randn(1, 1, spec.slices, h, w, device=device)
    if spec.warmup:
        encode_slices(vit, x[:, :, : min(2, spec.slices)], per_call, dtype)
    sync(device)
    times = []
    for _ in range(spec.reps):
        t = time.perf_counter()
        encode_slices(vit, x, per_call, dtype)
        sync(device)
        times.append(time.perf_counter() - t)
    best = min(times)
    flops = vit_flops_per_slice(spec.encoder, (h, w), spec.fast_attention)
    return {"spec": asdict(spec), "times_s": times, "slices_per_s": spec.slices / best,
            "achieved_flops": flops * spec.slices / best, "flops_per_slice": flops, **peak_memory(device)}


def fit_batch(peaks: dict[int, int], capacity: int) -> dict[str, Any]:
    """Largest batch under ``capacity`` from a linear fit ``peak = a + s * batch`` (an estimate)."""
    (b1, p1), (b2, p2) = sorted(peaks.items())[:2]
    slope = (p2 - p1) / (b2 - b1)
    intercept = p1 - slope * b1
    largest = int((capacity - intercept) // slope) if slope > 0 else None
    return {"bytes_per_sample": slope, "fixed_bytes": intercept, "largest_batch": largest}


def write_json_atomic(path: Path, obj: Any) -> None:
    from sam3dlib.utils.fileio import atomic_write_json

    atomic_write_json(path, obj)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
