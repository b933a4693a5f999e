"""Prediction of a brain-sized volume: the whole model on every window against each slice encoded once.

Two runs, as ``sam3d predict`` sees a brain-extracted 1 mm T1 of 181 x 217 x 181 voxels:

* ``litemedsam``: the MNI tissue task's run (LiteMedSAM encoder, patch 8 x 64 x 48, 3 classes,
  3 mm target spacing): the scan is resampled to 3 mm first, so the windows slide over
  60 x 72 x 60 voxels (z, y, x);
* ``vit_b``: a paper configuration (SAM ViT-B, patch 64 x 176 x 176, 14 classes) on the 1 mm grid.

For each, the two sliding-window paths of :func:`sam3dlib.inference.sliding_window.sliding_window_predict`
run in their own child processes (so each has its own peak memory): ``reference`` (``encode_once=False``:
encoder + decoder on every window and mirror term) and ``encode_once`` (each slice encoded once per
in-plane window and in-plane flip). Reported: seconds, the ratio, the peak memory of each (process
peak RSS on the CPU, ``max_memory_allocated`` on a GPU), the largest probability difference and
whether the label maps are identical. Encoder weights: LiteMedSAM's installed file; ViT-B random
(speed and agreement do not depend on the weights). Decoders random (seeded). The volume is a
synthetic head (a smooth ellipsoidal "brain" in noise, seeded), z-scored.

Usage::

    python benchmarks/bench_predict.py --out results/bench                 # full size (long on a CPU)
    python benchmarks/bench_predict.py --out /tmp/b --depth 24 --runs litemedsam   # a sub-volume
    python benchmarks/bench_predict.py --out /tmp/b --device cuda          # on a GPU

``--depth`` / ``--height`` / ``--width`` cut a centred sub-volume (on the grid the windows slide
over) to measure on a loaded machine; the ratio grows with the depth (more depth windows share
each slice). The load average before and after each child is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

#: the runs: encoder, patch (D, H, W), classes, the grid the windows slide over (z, y, x)
RUNS: dict[str, dict[str, Any]] = {
    "litemedsam": {"encoder": "litemedsam", "patch": (8, 64, 48), "classes": 3, "shape": (60, 72, 60),
                   "what": "MNI tissue run (3 mm): a 1 mm 181 x 217 x 181 scan resampled to 3 mm"},
    "vit_b": {"encoder": "vit_b", "patch": (64, 176, 176), "classes": 14, "shape": (181, 217, 181),
              "what": "paper configuration (ViT-B, Synapse patch) on the 1 mm 181 x 217 x 181 grid"},
}
PATHS = ("reference", "encode_once")


def synthetic_head(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A z-scored ``1 x D x H x W`` volume: a bright ellipsoid with smooth texture in noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum(g**2 / r**2 for g, r in zip(grids, (0.8, 0.85, 0.75))) < 1
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    vol = np.where(inside, 1.0 + 4 * texture, 0.0) + 0.05 * rng.normal(size=shape)
    vol = (vol - vol.mean()) / vol.std()
    return vol[None].astype(np.float32)


def sub_volume(shape: tuple[int, int, int], depth: int | None, height: int | None, width: int | None) -> tuple[slice, ...]:
    """Centred slices cutting ``shape`` down to the given sizes (None: the whole axis)."""
    out = []
    for s, want in zip(shape, (depth, height, width)):
        n = s if want is None else min(s, int(want))
        out.append(slice((s - n) // 2, (s - n) // 2 + n))
    return tuple(out)


def build_run_model(name: str, device: torch.device, pool: int | None):
    from sam3dlib.modeling.build import build_sam3d

    run = RUNS[name]
    torch.manual_seed(0)
    kwargs = {} if pool is None else {"encoder_pool": pool}
    model = build_sam3d(run["classes"], image_size=run["patch"][1:], encoder=run["encoder"], **kwargs)
    return model.to(device).eval()


def child(args: argparse.Namespace) -> int:
    """One (run, path) measurement; writes ``--result`` JSON and ``--probs`` .npy."""
    import bench_lib as bl

    from sam3dlib.inference.sliding_window import sliding_window_predict
    from sam3dlib.utils.host_memory import reuse_freed_host_memory

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reuse_freed_host_memory(device.type)
    run = RUNS[args.run]
    image = synthetic_head(run["shape"])[(slice(None), *sub_volume(run["shape"], args.depth, args.height, args.width))]
    model = build_run_model(args.run, device, args.pool)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    load0 = bl.loadavg()
    t0 = time.perf_counter()
    probs = sliding_window_predict(model, image, run["patch"], overlap=1.0 - args.step_size,
                                   mirror_axes=None if args.no_mirror else (0, 1, 2),
                                   sw_batch_size=args.sw_batch_size, device=device,
                                   encode_once=args.path == "encode_once", progress=args.progress)
    bl.sync(device)
    seconds = time.perf_counter() - t0
    np.save(args.probs, probs.numpy())
    result = {"run": args.run, "path": args.path, "seconds": round(seconds, 2), "volume": list(image.shape[1:]),
              "patch": list(run["patch"]), "mirror": not args.no_mirror, "step_size": args.step_size,
              "encoder_pool": model.embedding_pool, "decoder_grid": list(model.embedding_hw),
              "load_before": load0, "load_after": bl.loadavg(), **bl.peak_memory(device)}
    Path(args.result).write_text(json.dumps(result))
    return 0


def _child_cmd(args: argparse.Namespace, run: str, path: str, result: Path, probs: Path) -> list[str]:
    cmd = [sys.executable, __file__, "--child", "--run", run, "--path", path, "--result", str(result),
           "--probs", str(probs), "--device", args.device, "--threads", str(args.threads),
           "--step-size", str(args.step_size), "--sw-batch-size", str(args.sw_batch_size)]
    for flag, value in (("--depth", args.depth), ("--height", args.height), ("--width", args.width),
                        ("--pool", args.pool)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + (["--no-mirror"] if args.no_mirror else []) + (["--progress"] if args.progress else [])


def compare(args: argparse.Namespace) -> dict[str, Any]:
    import bench_lib as bl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": bl.machine_info(torch.device(args.device)), "runs": {}}
    report["machine"]["torch_threads"] = args.threads
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                        os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            rows = {}
            for path in PATHS:
                res, probs = Path(tmp) / f"{run}-{path}.json", Path(tmp) / f"{run}-{path}.npy"
                print(f"[{run}] {path} ...", flush=True)
                subprocess.run(_child_cmd(args, run, path, res, probs), check=True, env=env)
                rows[path] = json.loads(res.read_text())
                print(f"[{run}] {path}: {rows[path]['seconds']} s, peak {rows[path]['peak_bytes'] / 2**20:.0f} MiB",
                      flush=True)
            a, b = (np.load(Path(tmp) / f"{run}-{p}.npy") for p in PATHS)
            rows["ratio"] = round(rows["reference"]["seconds"] / max(rows["encode_once"]["seconds"], 1e-9), 2)
            rows["max_abs_prob_diff"] = float(np.abs(a - b).max())
            rows["identical_labels"] = bool(np.array_equal(a.argmax(0), b.argmax(0)))
            rows["what"] = RUNS[run]["what"]
            report["runs"][run] = rows
            print(f"[{run}] ratio {rows['ratio']}x, max |dp| {rows['max_abs_prob_diff']:.2e}, "
                  f"identical labels: {rows['identical_labels']}", flush=True)
    (out / "bench_predict.json").write_text(json.dumps(report, indent=2))
    (out / "bench_predict.md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"Device {m['device']} ({m.get('gpu') or m['cpu']}), {m['torch_threads']} torch threads, torch {m['torch']}.",
             "", "| run | volume (z, y, x) | patch | mirror | reference s | encode-once s | ratio | peak MiB ref / once "
             "| max abs dp | same labels | load avg |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["runs"].items():
        ref, new = r["reference"], r["encode_once"]
        lines.append(f"| {name} | {' x '.join(map(str, ref['volume']))} | {' x '.join(map(str, ref['patch']))} | "
                     f"{'on' if ref['mirror'] else 'off'} | {ref['seconds']} | {new['seconds']} | {r['ratio']}x | "
                     f"{ref['peak_bytes'] / 2**20:.0f} / {new['peak_bytes'] / 2**20:.0f} | "
                     f"{r['max_abs_prob_diff']:.1e} | {r['identical_labels']} | "
                     f"{ref['load_before']}-{new['load_after']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--runs", nargs="+", choices=tuple(RUNS), default=list(RUNS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=max(1, min(os.cpu_count() or 1, 2)),
                    help="torch threads of each child (default: 2)")
    ap.add_argument("--depth", type=int, help="centred sub-volume: slices (on the windows' grid)")
    ap.add_argument("--height", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--no-mirror", action="store_true")
    ap.add_argument("--step-size", type=float, default=0.5)
    ap.add_argument("--sw-batch-size", type=int, default=1)
    ap.add_argument("--pool", type=int, help="encoder_pool of the runs (default: the encoder's)")
    ap.add_argument("--progress", action="store_true")
    # child mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run", choices=tuple(RUNS), help=argparse.SUPPRESS)
    ap.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--probs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    compare(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
