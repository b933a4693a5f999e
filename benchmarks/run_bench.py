"""SAM3D speed benchmarks: one run, one machine, ``bench.json`` + ``bench.md``.

Measures, with a random-weight checkpoint in the official format written by this script:

1. one Synapse training step in ``online`` mode against the paper's step (encoder rebuilt
   and checkpoint re-read inside the step, one encoder call per slice with batch B, the
   decoder convolving upsampled tensors, one-hot Dice+CE); 1b. the decoder-only step with
   each decoder/loss change added in turn;
2. ``cached`` vs ``online`` vs decoder-only (features in memory) steps for every dataset,
   with the FLOP bound of caching;
3. encoder throughput (slices/s) fp32 / bf16, SAM's attention vs ours, against the
   measured matmul peak;
4. ``make demo`` / test-suite wall time (only with ``--with-make``);
5. peak memory per step (process RSS and live tensor bytes) and the largest batch fitting
   11 GB / 80 GB (a linear fit of the tensor peaks);
6. peak memory added by exporting one 14-class 512 x 512 x 147 prediction, before (all classes
   resampled at once) and now (class by class), ``benchmarks/bench_export.py``.

Usage::

    python benchmarks/run_bench.py --out results/bench            # full (~10 min on 2 CPU cores)
    python benchmarks/run_bench.py --out /tmp/b --quick           # reduced sizes, stated scale
    python benchmarks/run_bench.py --out /tmp/b --quick --encoder vit_tiny --hw 32 --depth 2 \
        --datasets synapse --no-subprocess                        # the unit test's smoke run

No number is asserted; on a loaded machine the load average is recorded with each run.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_export  # noqa: E402
import bench_lib as bl  # noqa: E402
import torch  # noqa: E402

from sam3dlib.data.specs import get_spec  # noqa: E402
from sam3dlib.modeling.factory import torch_dtype  # noqa: E402
from sam3dlib.utils.devices import DEVICE_CHOICES, parse_device  # noqa: E402

GB = 1e9
# the decoder and loss as the paper's code runs them; ours are StepSpec's defaults
PAPER_DECODER = {"fused_upsample": False, "channels_last": False, "one_hot_loss": True, "reuse_host_memory": False}
DECODER_VARIANTS = (
    ("paper: upsample then convolve, one-hot Dice+CE", PAPER_DECODER),
    ("+ Dice+CE from labels (no one-hot tensors)", {**PAPER_DECODER, "one_hot_loss": False}),
    ("+ fused upsample-convolutions", {**PAPER_DECODER, "one_hot_loss": False, "fused_upsample": True}),
    ("+ channels-last-3d activations", {**PAPER_DECODER, "one_hot_loss": False, "fused_upsample": True,
                                        "channels_last": True}),
    ("+ freed host memory reused, no channels-last (used)", {"fused_upsample": True, "channels_last": False,
                                                             "one_hot_loss": False, "reuse_host_memory": True}),
)
CAPACITIES = {"11GB (RTX 2080 Ti)": 11 * 1024**3, "80GB (A100/H100)": 80 * 1024**3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="output folder (bench.json, bench.md)")
    p.add_argument("--quick", action="store_true", help="reduced sizes: Synapse depth 16 (1/4), fewer slices")
    p.add_argument("--device", default="auto", type=parse_device, help=f"{DEVICE_CHOICES} (default: auto)")
    p.add_argument("--encoder", default="vit_b", help="SAM ViT (vit_b; vit_tiny only for smoke tests)")
    p.add_argument("--datasets", default=",".join(bl.DATASETS), help="comma-separated datasets for item 2")
    p.add_argument("--synapse-depth", type=int, default=None,
                   help="depth of the item-1 step (default 64 on GPU, 32 on CPU to stay near 10 min; quick 16)")
    p.add_argument("--depth-scale", type=float, default=None,
                   help="item 2 depth as a fraction of each dataset's (default: 0.125 on CPU, 1 on GPU)")
    p.add_argument("--depth", type=int, default=None, help="absolute depth for every step (tests)")
    p.add_argument("--hw", type=int, default=None, help="in-plane crop for every step (tests; multiple of 16)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per step (default 1 CPU, 5 GPU)")
    p.add_argument("--slices", type=int, default=None, help="slices per encoder-throughput run (default 8 CPU, 256 GPU)")
    p.add_argument("--with-make", action="store_true", help="also time `make demo` and the test suite")
    p.add_argument("--no-subprocess", action="store_true", help="measure in this process (peaks then mix)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- running specs
def measure(spec: bl.StepSpec, args: argparse.Namespace, label: str) -> dict[str, Any]:
    print(f"[bench] {label} ...", flush=True)
    load0 = bl.loadavg()
    if args.no_subprocess:
        result = bl.run_step_spec(spec)
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(asdict(spec))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark child {label!r} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(label=label, loadavg_before=load0, loadavg_after=bl.loadavg())
    shown = result.get("step_s") or (result.get("slices_per_s") and f"{result['slices_per_s']:.3g} slices/s")
    print(f"[bench]   {label}: {shown}", flush=True)
    return result


def child(spec_json: str) -> None:
    values = json.loads(spec_json)
    values["hw"] = tuple(values["hw"]) if values.get("hw") else None
    print(json.dumps(bl.run_step_spec(bl.StepSpec(**values)), default=str))


# ----------------------------------------------------------------------------- the items
def settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    gpu = device.type == "cuda"
    s = {
        "synapse_depth": args.synapse_depth or (16 if args.quick else (64 if gpu else 32)),
        "depth_scale": args.depth_scale or (1.0 if gpu else 0.125),
        "reps": args.reps or (5 if gpu else 1),
        "slices": args.slices or (256 if gpu else (4 if args.quick else 8)),
        "datasets": [d.strip() for d in args.datasets.split(",") if d.strip()],
        "encoder": args.encoder,
        "hw": args.hw,
        "depth": args.depth,
    }
    for d in s["datasets"]:
        get_spec(d)  # clear error for unknown names
    return s


def dataset_shape(dataset: str, s: dict[str, Any], depth: int | None = None) -> tuple[int, tuple[int, int]]:
    d, h, w = get_spec(dataset).patch_size
    hw = (s["hw"], s["hw"]) if s["hw"] else (h, w)
    return (s["depth"] or depth or d), hw


def probe_dtypes(args, s, device, peaks) -> dict[str, Any]:
    """Which autocast dtype is faster here, for the encoder (matmul peak) and the decoder (a step)."""
    bf16_matmul_ratio = peaks["bfloat16"] / peaks["float32"]
    base = dict(dataset="synapse", batch=1, depth=1, encoder="vit_tiny", device=args.device, reps=1,
                hw=dataset_shape("synapse", s)[1], fast_attention=True)
    dec = {dt: measure(bl.StepSpec("floor", decoder_dtype=dt, **base), args, f"decoder probe {dt} (B1 D1)")
           for dt in ("float32", "bfloat16")}
    return {
        "bf16_matmul_speed_vs_fp32": bf16_matmul_ratio,
        "encoder_dtype": "bfloat16" if bf16_matmul_ratio > 1.2 else "float32",
        "decoder_probe_s": {k: v["step_s"] for k, v in dec.items()},
        # bf16 only when clearly faster (10%): a tiny probe is noisy on a shared machine
        "decoder_dtype": "bfloat16" if dec["bfloat16"]["step_s"] < 0.9 * dec["float32"]["step_s"] else "float32",
    }


def item3_encoder(args, s, device, peaks, dtypes) -> list[dict[str, Any]]:
    _, hw = dataset_shape("synapse", s)
    slow_bf16 = dtypes["bf16_matmul_speed_vs_fp32"] < 0.25
    variants = [
        ("paper: one call per slice (batch 2), SAM attention, fp32", dict(chunk=2, fast_attention=False)),
        ("batched (up to 32 slices per call), SAM attention, fp32", dict(chunk=32, fast_attention=False)),
        ("batched + fast attention, fp32", dict(chunk=32, fast_attention=True)),
        ("batched, SAM attention, bf16 autocast", dict(chunk=32, fast_attention=False, encoder_dtype="bfloat16")),
        ("batched + fast attention, bf16 autocast", dict(chunk=32, fast_attention=True, encoder_dtype="bfloat16")),
    ]
    rows = []
    for label, kw in variants:
        n = 1 if (slow_bf16 and kw.get("encoder_dtype") == "bfloat16") else s["slices"]
        r = measure(bl.StepSpec("encoder", hw=hw, encoder=s["encoder"], device=args.device, slices=max(n, 1),
                                reps=3, **kw), args, f"encoder {label}")
        peak = max(peaks.values())
        rows.append({"variant": label, "slices": n, "slices_per_s": r["slices_per_s"], "hw": list(hw),
                     "gflop_per_slice": r["flops_per_slice"] / 1e9,
                     "sam_gflop_per_slice": bl.vit_flops_per_slice(s["encoder"], hw, False) / 1e9,
                     "achieved_tflops": r["achieved_flops"] / 1e12,
                     "fraction_of_best_matmul_peak": r["achieved_flops"] / peak,
                     "fraction_of_bf16_matmul_peak": r["achieved_flops"] / peaks["bfloat16"],
                     "loadavg": [r["loadavg_before"], r["loadavg_after"]]})
    return rows


def item1_step(args, s, device, dtypes, ckpt: Path) -> dict[str, Any]:
    depth, hw = dataset_shape("synapse", s, s["synapse_depth"])
    full_depth = get_spec("synapse").patch_size[0]
    # warmed (one encoder call of the step's batch shape, one decoder step): training runs thousands
    # of steps, so the steady state is compared, without oneDNN's/cuDNN's per-shape set-up
    common = dict(dataset="synapse", depth=depth, hw=hw, encoder=s["encoder"], device=args.device, reps=s["reps"])
    base = measure(bl.StepSpec("baseline", encoder_weights=str(ckpt), fast_attention=False, **PAPER_DECODER, **common),
                   args, "item 1 baseline (paper) step")
    # the same baseline with our allocator setting, so the setting's share of the speed-up is visible
    base_reuse = measure(bl.StepSpec("baseline", encoder_weights=str(ckpt), fast_attention=False,
                                     **{**PAPER_DECODER, "reuse_host_memory": True}, **common),
                         args, "item 1 baseline (paper) step, freed host memory reused")
    ours = measure(bl.StepSpec("online", encoder_dtype=dtypes["encoder_dtype"], decoder_dtype=dtypes["decoder_dtype"],
                               **common), args, "item 1 online step (ours)")
    out = {"depth": depth, "depth_of_paper_config": full_depth, "hw": list(hw), "batch": get_spec("synapse").batch_size,
           "baseline": base, "baseline_host_memory_reused": base_reuse, "ours_online": ours,
           "speedup": base["step_s"] / ours["step_s"],
           "speedup_vs_baseline_host_memory_reused": base_reuse["step_s"] / ours["step_s"]}
    out["note"] = ("baseline: encoder built and checkpoint read inside the step, one encoder call per slice "
                   "(batch B), segment-anything's attention, decoder convolving upsampled tensors, one-hot Dice+CE "
                   "(nnU-Net's form), default allocator; ours: encoder built once, batched slices, fast attention, "
                   "fused upsample-convolutions, Dice+CE from labels, freed host memory reused (CPU).")
    if depth != full_depth:
        out["note"] += (f" Measured at depth {depth} instead of {full_depth}; every part except the checkpoint load "
                        f"scales linearly with depth (x{full_depth / depth:g}).")
    return out


def item1b_decoder(args, s, device, dtypes, rounds: int = 3) -> list[dict[str, Any]]:
    """The decoder-only Synapse step (features in memory) with each decoder/loss change added in turn.

    The variants are measured in ``rounds`` interleaved rounds (best of all), so that a burst of
    load from other jobs on a shared machine does not fall on one variant only.
    """
    full_d = get_spec("synapse").patch_size[0]
    depth, hw = dataset_shape("synapse", s, max(1, round(full_d * s["depth_scale"])))
    b = get_spec("synapse").batch_size
    times: dict[str, list[float]] = {label: [] for label, _ in DECODER_VARIANTS}
    for i in range(rounds):
        for label, kw in DECODER_VARIANTS:
            r = measure(bl.StepSpec("floor", dataset="synapse", depth=depth, hw=hw, device=args.device,
                                    reps=max(s["reps"], 2), decoder_dtype=dtypes["decoder_dtype"], **kw),
                        args, f"decoder step (round {i + 1}/{rounds}): {label}")
            times[label] += r["times_s"]
    rows = []
    for label, kw in DECODER_VARIANTS:
        flops = bl.decoder_step_flops("synapse", b, depth, hw, kw["fused_upsample"])
        step = min(times[label])
        rows.append({"variant": label, "batch": b, "depth": depth, "hw": list(hw), "step_s": step,
                     "times_s": times[label], "gflop": flops / 1e9, "achieved_gflops": flops / step / 1e9})
    for r in rows:
        r["speedup_vs_paper"] = rows[0]["step_s"] / r["step_s"]
    return rows


def item2_cached(args, s, device, dtypes, cache_dir: Path) -> dict[str, Any]:
    results = {}
    for name in s["datasets"]:
        spec = get_spec(name)
        full_d = spec.patch_size[0]
        depth, hw = dataset_shape(name, s, max(1, round(full_d * s["depth_scale"])))
        common = dict(dataset=name, depth=depth, hw=hw, encoder=s["encoder"], device=args.device, reps=s["reps"],
                      encoder_dtype=dtypes["encoder_dtype"], decoder_dtype=dtypes["decoder_dtype"])
        r = {m: measure(bl.StepSpec(m, cache_dir=str(cache_dir / name), trace_memory=True, **common), args,
                        f"item 2 {name} {m}")
             for m in ("online", "cached", "floor")}
        r["floor_batch1"] = measure(bl.StepSpec("floor", trace_memory=True, **{**common, "batch": 1}), args,
                                    f"item 2 {name} floor B=1")
        b = spec.batch_size
        enc = bl.vit_flops_per_slice(s["encoder"], hw, True) * b * spec.num_channels * depth
        dec = bl.decoder_step_flops(name, b, depth, hw)
        results[name] = {
            "batch": b, "depth": depth, "depth_of_paper_config": full_d, "hw": list(hw), "channels": spec.num_channels,
            "steps": r,
            "online_over_cached": r["online"]["step_s"] / r["cached"]["step_s"],
            "cached_over_floor": r["cached"]["step_s"] / r["floor"]["step_s"],
            "cached_read_s": r["cached"]["parts_s"].get("read_s", 0.0),
            "cached_read_over_floor": r["cached"]["parts_s"].get("read_s", 0.0) / r["floor"]["step_s"],
            "encoder_tflop_per_step": enc / 1e12, "decoder_tflop_per_step": dec / 1e12,
            "flop_bound_online_over_cached": (enc + dec) / dec,
        }
    return results


def item5_memory(item1: dict | None, item2: dict) -> dict[str, Any]:
    """Measured peaks and the linear-fit batch estimates (full paper depth)."""
    out: dict[str, Any] = {"measured": {}, "estimates": {}}
    if item1:
        for k in ("baseline", "ours_online"):
            out["measured"][f"synapse {k} (depth {item1['depth']})"] = {
                "peak_gb": item1[k]["peak_bytes"] / GB, "kind": item1[k]["peak_kind"]}
    for name, r in item2.items():
        steps = r["steps"]
        for m in ("online", "cached", "floor", "floor_batch1"):
            out["measured"][f"{name} {m} (depth {r['depth']})"] = {
                "peak_gb": steps[m]["peak_bytes"] / GB, "kind": steps[m]["peak_kind"],
                "tensor_peak_gb": steps[m]["tensor_peak_bytes"] / GB}
        fit = bl.fit_batch({1: steps["floor_batch1"]["tensor_peak_bytes"], r["batch"]: steps["floor"]["tensor_peak_bytes"]}, 1)
        scale = r["depth_of_paper_config"] / r["depth"]
        per_sample = max(fit["bytes_per_sample"], 0.0) * scale
        fixed = max(fit["fixed_bytes"], 0.0)
        est = {"bytes_per_sample_full_depth_gb": per_sample / GB, "fixed_gb": fixed / GB}
        for mode in ("online", "cached"):
            extra = max(steps[mode]["tensor_peak_bytes"] - steps["floor"]["tensor_peak_bytes"], 0)
            est[f"{mode}_extra_gb"] = extra / GB
            for cap_name, cap in CAPACITIES.items():
                n = int((cap - fixed - extra) // per_sample) if per_sample > 0 else None
                est[f"{mode} largest batch in {cap_name}"] = n
        out["estimates"][name] = est
    out["method"] = ("tensor peak = live tensor bytes at the step's high point (CUDA max_memory_allocated; on CPU the "
                     "profiler's allocation records plus the parameters, optimizer state and inputs), fp32 decoder. "
                     "Per-sample bytes = slope between the decoder-only steps at batch 1 and the dataset's batch, "
                     "scaled linearly to the paper's depth; fixed bytes = intercept; online/cached extra = their "
                     "tensor peak minus the decoder-only one (encoder weights and one chunk's activations; feature "
                     "reading). A GPU adds the CUDA context (~0.5 GB) and allocator fragmentation, so these are "
                     "estimates, not measurements on those cards.")
    return out


def schedule_estimate(item1: dict | None, item2: dict) -> dict[str, Any]:
    """Wall time of the paper's Synapse schedule from this run's steps (training steps only)."""
    from sam3dlib.study.registry import get_config

    cfg = get_config("table1_synapse", profile="paper")
    steps = cfg.epochs * cfg.iterations_per_epoch
    full_d = get_spec("synapse").patch_size[0]
    out: dict[str, Any] = {"epochs": cfg.epochs, "iterations_per_epoch": cfg.iterations_per_epoch, "steps": steps,
                           "note": "training steps only, scaled linearly from the measured depth to the paper's "
                                   f"{full_d}; validation and the one-off feature-cache build are not included"}
    if item1:
        step = item1["ours_online"]["step_s"] * full_d / item1["depth"]
        base = item1["baseline"]["step_s"] * full_d / item1["depth"]
        out["online_days"], out["paper_code_days"] = step * steps / 86400, base * steps / 86400
    if "synapse" in item2:
        r = item2["synapse"]
        out["cached_days"] = r["steps"]["cached"]["step_s"] * full_d / r["depth"] * steps / 86400
    return out


def item4_make(args) -> dict[str, Any]:
    if not args.with_make:
        return {"note": "not measured in this run (pass --with-make to time `make demo` and the test suite)"}
    root = Path(__file__).resolve().parents[1]
    out = {}
    for name, cmd in (("make demo", ["make", "demo"]), ("test suite", ["make", "test"])):
        load0 = bl.loadavg()
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        out[name] = {"seconds": time.perf_counter() - t, "returncode": proc.returncode, "loadavg_before": load0}
    return out


# ----------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# SAM3D benchmark (random-weight ViT encoder `{report['settings']['encoder']}`, synthetic tensors)", "",
             f"Command: `{report['command']}`  ", f"Device: {m['device']} ({m.get('gpu') or m['cpu']}), "
             f"{m['torch_threads']} torch threads, torch {m['torch']}; CPU bf16 flags: {m['cpu_bf16_flags'] or 'none'}  ",
             f"Load average: {report['loadavg_start']} at start, {report['loadavg_end']} at end; "
             f"wall time {report['wall_s']:.0f} s", ""]
    pk = report["matmul_peak_tflops"]
    lines += ["## Matmul peak (measured)", "", "| dtype | TFLOP/s |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in pk.items()] + [""]
    dt = report["dtype_choice"]
    lines += [f"Autocast choice from probes: encoder {dt['encoder_dtype']}, decoder {dt['decoder_dtype']} "
              f"(bf16 matmul = {dt['bf16_matmul_speed_vs_fp32']:.3g} x fp32; decoder step B1 D1: "
              + ", ".join(f"{k} {v:.3g} s" for k, v in dt["decoder_probe_s"].items()) + ")", ""]
    for key, err in report.get("errors", {}).items():
        lines += [f"**{key} failed:** `{err}`", ""]
    lines += ["## 3. Encoder throughput and each change's effect", "",
              "| variant | slices | slices/s | GFLOP/slice (ours / SAM) | achieved TFLOP/s | of best matmul peak | of bf16 peak |",
              "|---|---|---|---|---|---|---|"]
    for r in report.get("encoder_throughput", []):
        lines.append(f"| {r['variant']} | {r['slices']} | {r['slices_per_s']:.3g} | {r['gflop_per_slice']:.3g} / "
                     f"{r['sam_gflop_per_slice']:.3g} | {r['achieved_tflops']:.3g} | "
                     f"{r['fraction_of_best_matmul_peak']:.0%} | {r['fraction_of_bf16_matmul_peak']:.0%} |")
    lines.append("")
    if report.get("step_vs_baseline"):
        s = report["step_vs_baseline"]
        lines += [f"## 1. Synapse training step vs the paper's (B {s['batch']}, depth {s['depth']}, "
                  f"{s['hw'][0]}x{s['hw'][1]})", "", "| step | total s | load s | encode s | decoder s | peak GB |",
                  "|---|---|---|---|---|---|"]
        for k in ("baseline", "baseline_host_memory_reused", "ours_online"):
            if k not in s:
                continue
            r, p = s[k], s[k]["parts_s"]
            lines.append(f"| {k} | {r['step_s']:.3g} | {p.get('load_s', 0):.3g} | {p.get('encode_s', 0):.3g} | "
                         f"{p.get('decoder_s', 0):.3g} | {r['peak_bytes'] / GB:.2f} |")
        lines += ["", f"**Speed-up: {s['speedup']:.2f}x** (goal 1.5x on 2 CPU cores, 10x on an H100); "
                  f"{s['speedup_vs_baseline_host_memory_reused']:.2f}x against the baseline given our host-memory "
                  "setting too. " + s.get("note", ""), ""]
    if report.get("decoder_variants"):
        rows = report["decoder_variants"]
        r0 = rows[0]
        lines += [f"## 1b. Decoder-only Synapse step: each change's effect (B {r0['batch']}, depth {r0['depth']}, "
                  f"{r0['hw'][0]}x{r0['hw'][1]}, features in memory, best of {len(r0['times_s'])} in interleaved rounds)", "",
                  "| variant | step s | GFLOP (fwd+bwd) | achieved GFLOP/s | vs paper |", "|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['step_s']:.3g} | {r['gflop']:.0f} | {r['achieved_gflops']:.3g} | "
                  f"{r['speedup_vs_paper']:.2f}x |" for r in rows]
        lines.append("")
    if report.get("cached_vs_online"):
        lines += ["## 2. Cached vs online vs decoder-only floor", "",
                  "| dataset | B x C x depth x H x W | online s | cached s (of which reading) | floor s | online/cached "
                  "| FLOP bound | cached/floor | reading/floor |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["cached_vs_online"].items():
            st = r["steps"]
            lines.append(f"| {name} | {r['batch']}x{r['channels']}x{r['depth']}x{r['hw'][0]}x{r['hw'][1]} | "
                         f"{st['online']['step_s']:.3g} | {st['cached']['step_s']:.3g} ({r['cached_read_s']:.2g}) | "
                         f"{st['floor']['step_s']:.3g} | {r['online_over_cached']:.2f} | "
                         f"{r['flop_bound_online_over_cached']:.1f} | {r['cached_over_floor']:.2f} | "
                         f"{r['cached_read_over_floor']:.1%} |")
        lines += ["", "Depths are the paper's times the depth scale "
                  f"({report['settings']['depth_scale']}); ratios do not depend on it (all parts are linear in depth).", ""]
    mem = report.get("memory")
    if mem:
        lines += ["## 5. Peak memory (measured) and batch estimates", "",
                  "| configuration | process peak GB | kind | tensor peak GB |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['peak_gb']:.2f} | {v['kind']} | "
                  + (f"{v['tensor_peak_gb']:.3f} |" if "tensor_peak_gb" in v else "- |") for k, v in mem["measured"].items()]
        lines += ["", "| dataset | GB/sample (paper depth) | fixed GB | online extra GB | " + " | ".join(
            f"{m} max batch {c}" for m in ("online", "cached") for c in CAPACITIES) + " |",
                  "|---|---|---|---|" + "---|" * (2 * len(CAPACITIES))]
        for name, e in mem["estimates"].items():
            lines.append(f"| {name} | {e['bytes_per_sample_full_depth_gb']:.3g} | {e['fixed_gb']:.3g} | "
                         f"{e['online_extra_gb']:.3g} | " + " | ".join(
                str(e[f"{m} largest batch in {c}"] or "n/a") for m in ("online", "cached") for c in CAPACITIES) + " |")
        lines += ["", "Estimates: " + mem["method"], ""]
    sch = report.get("schedule")
    if sch:
        lines += [f"## The paper's Synapse schedule on this device ({sch['epochs']} epochs x "
                  f"{sch['iterations_per_epoch']} steps, estimate)", ""]
        lines += [f"- {label}: {sch[key]:.3g} days" for key, label in (
            ("paper_code_days", "the paper's code (baseline step)"), ("online_days", "ours, online"),
            ("cached_days", "ours, cached features")) if key in sch]
        lines += [f"- {sch['note']}", ""]
    if report.get("export_memory"):
        lines += ["## 6. Peak memory of exporting one prediction (14 classes, 512 x 512 x 147)", "",
                  bench_export.markdown(report["export_memory"]), "",
                  "Added peak RSS: the process's peak after the export minus before it (the scores are held "
                  "before); see benchmarks/bench_export.py for the case.", ""]
    lines += ["## 4. `make demo` and test suite", ""]
    mk = report.get("make", {})
    lines += [f"- {k}: {v['seconds']:.0f} s (rc {v['returncode']})" for k, v in mk.items() if isinstance(v, dict)]
    lines += [f"- {mk['note']}"] if "note" in mk else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return {}
    t0 = time.perf_counter()
    device = bl.pick_device(args.device)
    s = settings(args, device)
    report: dict[str, Any] = {
        "title": "SAM3D benchmark on a random-weight encoder and synthetic tensors",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]) if argv is None
        else "run_bench.py " + " ".join(map(shlex.quote, argv)),
        "machine": bl.machine_info(device), "settings": s, "loadavg_start": bl.loadavg(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    from sam3dlib.utils.fileio import atomic_write_text

    def save(final: bool = False) -> None:
        report["complete"] = final
        report["wall_s"] = time.perf_counter() - t0
        bl.write_json_atomic(args.out / "bench.json", report)
        if final:
            atomic_write_text(args.out / "bench.md", markdown(report))

    def item(key: str, fn) -> None:  # one failing item is recorded, the others still run
        try:
            report[key] = fn()
        except Exception as exc:  # noqa: BLE001 - recorded in the report, re-raised in tests via the report
            report.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
            print(f"[bench] {key} failed: {exc}", file=sys.stderr, flush=True)
        save()

    n = 4096 if device.type == "cuda" else 1024
    peaks = {name: bl.matmul_peak(device, torch_dtype(name) or torch.float32, n, 1.0 if name == "float32" else 0.5)
             for name in bl.DTYPE_NAMES}
    report["matmul_peak_tflops"] = {k: v / 1e12 for k, v in peaks.items()}
    report["dtype_choice"] = dtypes = probe_dtypes(args, s, device, peaks)
    save()
    item("encoder_throughput", lambda: item3_encoder(args, s, device, peaks, dtypes))
    work = Path(tempfile.mkdtemp(prefix="_bench_work_", dir=args.out))
    try:
        from sam3dlib.modeling.encoders import save_random_sam_weights

        ckpt = save_random_sam_weights(work / f"random_{s['encoder']}_official_format.pth", s["encoder"])
        report["checkpoint"] = {"file": ckpt.name, "bytes": ckpt.stat().st_size,
                                "note": "random weights, official SAM state-dict layout"}
        item("step_vs_baseline", lambda: item1_step(args, s, device, dtypes, ckpt))
        item("decoder_variants", lambda: item1b_decoder(args, s, device, dtypes, rounds=1 if args.quick else 3))
        item("cached_vs_online", lambda: item2_cached(args, s, device, dtypes, work / "cache"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    item("memory", lambda: item5_memory(report.get("step_vs_baseline"), report.get("cached_vs_online") or {}))
    item("schedule", lambda: schedule_estimate(report.get("step_vs_baseline"), report.get("cached_vs_online") or {}))
    export_scale = 0.05 if args.hw else 0.25 if args.quick else 1.0  # --hw: the tests' tiny sizes
    item("export_memory", lambda: bench_export.run_all(export_scale, in_process=args.no_subprocess))
    item("make", lambda: item4_make(args))
    report["loadavg_end"] = bl.loadavg()
    save(final=True)
    print(f"[bench] wrote {args.out / 'bench.json'} and bench.md in {report['wall_s']:.0f} s", flush=True)
    return report


if __name__ == "__main__":
    main()
