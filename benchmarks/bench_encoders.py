"""Frozen-encoder throughput per registry encoder: slices/s and FLOP/s against the matmul peak.

Rows: LiteMedSAM as packaged (``build_lite_medsam().image_encoder``, weights loaded, eval), as
SAM3D runs it (BatchNorm folded, channels-last, the exact fast forward of
:mod:`sam3dlib.modeling.encoders.tinyvit_fast`, the slices of a call split between one
single-threaded worker per intra-op thread) and the same forward in one call on the intra-op
threads (what the workers add), all at the native 256 px; SAM's ViT-B at the Synapse crop (176 px) with our fast attention.
The variants are timed in turns within one run (round robin, best of ``--reps``), so their
ratio holds even when other processes share the cores; the load average is recorded. FLOPs
per slice are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions) on
the packaged module for both LiteMedSAM rows: the counter does not see the fused oneDNN calls of
ours, which compute the same network.

Usage::

    python benchmarks/bench_encoders.py --out results/bench          # ~2-4 min on 2 idle cores
    python benchmarks/bench_encoders.py --out /tmp/b --slices 1 --reps 1 --no-vit   # the unit test's smoke run
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_lib as bl
import torch
from torch.utils.flop_counter import FlopCounterMode

from sam3dlib.modeling.build import build_sam3d
from sam3dlib.modeling.encoders import litemedsam
from sam3dlib.modeling.sam3d import prepare_slices


class _OneCall(torch.nn.Module):
    """Our LiteMedSAM forward on the whole batch in the calling thread (intra-op threads, no workers)."""

    def __init__(self, encoder: litemedsam.LiteMedSAMEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.fast.forward_batch(x.contiguous(memory_format=torch.channels_last))


def _variants(with_vit: bool) -> dict[str, tuple[torch.nn.Module, tuple[int, int], torch.nn.Module]]:
    """name -> (module timed, input size, module whose FLOPs are counted); packaged first, ours second."""
    packaged = litemedsam.build_tinyvit()
    litemedsam.load_litemedsam(packaged)
    ours = build_sam3d(3, image_size=64, encoder="litemedsam").encoder
    out = {"litemedsam, packaged (BatchNorm, NCHW)": (packaged, (256, 256), packaged),
           "litemedsam, ours (fast forward, a single-threaded worker per core)": (ours, (256, 256), packaged),
           "litemedsam, ours in one call (intra-op threads)": (_OneCall(ours), (256, 256), packaged)}
    if with_vit:
        vit = build_sam3d(14, image_size=176, encoder="vit_b").encoder
        out["vit_b at 176 px (fast attention)"] = (vit, (176, 176), vit)
    return out


def _flops(module: torch.nn.Module, hw: tuple[int, int]) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(torch.rand(1, 3, *hw))
    return float(counter.get_total_flops())


def measure(slices: int = 4, reps: int = 2, with_vit: bool = True) -> dict[str, Any]:
    """Round-robin timing of every variant on ``slices`` slices per call; best of ``reps``."""
    device = torch.device("cpu")
    variants = _variants(with_vit)
    peak = bl.matmul_peak(device, torch.float32, 1024)
    inputs = {name: prepare_slices(torch.rand(slices, 1, *hw)) for name, (_, hw, _) in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for name, (module, _, _) in variants.items():  # warm-up
            module(inputs[name][:1])
        for _ in range(reps):
            for name, (module, _, _) in variants.items():
                t = time.perf_counter()
                module(inputs[name])
                times[name].append(time.perf_counter() - t)
    rows = []
    for name, (_, hw, counted) in variants.items():
        best = min(times[name])
        flops = _flops(counted, hw)
        rows.append({"encoder": name, "input": f"{hw[0]}x{hw[1]}", "slices_per_s": slices / best,
                     "gflop_per_slice": flops / 1e9, "achieved_gflops": flops * slices / best / 1e9,
                     "fraction_of_matmul_peak": flops * slices / best / peak, "times_s": times[name]})
    packaged, ours = rows[0]["slices_per_s"], rows[1]["slices_per_s"]
    return {"machine": bl.machine_info(device), "loadavg_1min": bl.loadavg(), "matmul_peak_gflops": peak / 1e9,
            "slices_per_call": slices, "reps": reps, "threads": torch.get_num_threads(), "rows": rows,
            "litemedsam_speedup": ours / packaged}


def to_markdown(report: dict[str, Any]) -> str:
    lines = ["# Frozen-encoder throughput (CPU, fp32, inference mode)", "",
             (f"{report['slices_per_call']} slices per call, best of {report['reps']} round-robin reps; fp32 matmul "
             f"peak {report['matmul_peak_gflops']:.1f} GFLOP/s; 1-min load average {report['loadavg_1min']}."), "",
             "| encoder | input | slices/s | GFLOP/slice | GFLOP/s | of matmul peak |", "|---|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['encoder']} | {r['input']} | {r['slices_per_s']:.3f} | {r['gflop_per_slice']:.1f} | "
                     f"{r['achieved_gflops']:.1f} | {r['fraction_of_matmul_peak']:.0%} |")
    lines += ["", f"LiteMedSAM, ours / packaged (same run): {report['litemedsam_speedup']:.2f}x", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--no-vit", action="store_true", help="LiteMedSAM rows only")
    args = p.parse_args(argv)
    report = measure(args.slices, args.reps, not args.no_vit)
    args.out.mkdir(parents=True, exist_ok=True)
    bl.write_json_atomic(args.out / "bench_encoders.json", report)
    (args.out / "bench_encoders.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return report


if __name__ == "__main__":
    main()
