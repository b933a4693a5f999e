"""Embedding pool of a fine-grid encoder: the trainer's step time and test DSC for each pool.

Two measurements, one table each:

* ``--dsc`` (the evidence for the registry's ``default_pool``): one trainer run per pool on the
  demo's MNI152 grey/white-matter task (``sam3dlib.study.mri_demo.compare_encoders``: 3 mm,
  crop 6 x 80 x 80, LiteMedSAM's 64 x 64 grid, the ``demo`` profile's 150 AdamW steps, cached
  features), predicted and scored on the test slabs by the pipeline. Per pool: the decoder grid,
  seconds per training step (``log.csv``), mean GM/WM DSC and HD95 (mm), wall time of the run.
  ``--budget-s N`` trains every pool for N seconds instead (equal time, not equal steps).
* without it: the trainer's own step (:func:`sam3dlib.training.step.decoder_update`) on random
  features of the ``train custom`` MNI patch (8 x 64 x 48, 3 classes, batch 2), after one
  warm-up step; no accuracy.

Usage::

    python benchmarks/encoder_pool_step.py --out results/bench --pools 1 2 4 8 --dsc
    python benchmarks/encoder_pool_step.py --out results/bench --pools 2 4 --dsc --budget-s 300
    python benchmarks/encoder_pool_step.py --out results/bench --pools 1 2 4 8 --steps 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sam3dlib.modeling.decoder import Decoder3D  # noqa: E402
from sam3dlib.modeling.encoders import check_crop_size, decoder_grid, get_encoder_spec  # noqa: E402
from sam3dlib.study.registry import get_config  # noqa: E402
from sam3dlib.training.optim import make_optimizer  # noqa: E402
from sam3dlib.training.step import decoder_update, make_loss  # noqa: E402


def measure(encoder: str, crop: tuple[int, int], depth: int, batch: int, classes: int, pool: int, steps: int) -> dict:
    """Seconds per trainer step on random features of one pool's decoder grid."""
    input_hw, ups = check_crop_size(encoder, crop, None, pool)
    spec = get_encoder_spec(encoder)
    grid = decoder_grid(crop, ups)
    torch.manual_seed(0)
    decoder = Decoder3D(spec.channels, classes, upsamplings=ups).train()
    cfg = get_config("table1_synapse", "paper")  # the trainer's optimiser and loss settings
    optimizer = make_optimizer(cfg, decoder.parameters())
    loss_fn = make_loss(cfg)
    feats = torch.randn(batch, spec.channels, depth, *grid)
    target = torch.randint(0, classes, (batch, depth, *crop))
    decoder_update(decoder, feats, target, optimizer, loss_fn, cfg.grad_clip)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        decoder_update(decoder, feats, target, optimizer, loss_fn, cfg.grad_clip)
    return {"encoder": encoder, "pool": pool, "encoder_grid": [s // spec.stride for s in input_hw],
            "decoder_grid": list(grid), "upsamplings": ups, "s_per_step": round((time.perf_counter() - t0) / steps, 3),
            "cpu_s_per_step": round((time.process_time() - c0) / steps, 3),
            "load": round(os.getloadavg()[0], 1)}


def measure_dsc(encoder: str, pools: list[int], out: Path, budget_s: float | None = None):
    """One demo-task trainer run per pool: the table of grid, s/step, DSC, HD95 and seconds.

    ``budget_s``: every pool trains for that many seconds instead of the demo's 150 steps (its
    poly schedule on the budget, as the demo's baseline arm), an equal-time comparison.
    """
    import pandas as pd

    from sam3dlib.study.mri_demo import BUDGET_STEP_FACTOR, Arm, MRIDemoSettings, compare_encoders

    s = MRIDemoSettings(encoder=encoder)
    budget = {} if budget_s is None else {"time_budget_s": budget_s, "epochs": s.epochs()[0] * BUDGET_STEP_FACTOR}
    arms = [Arm(f"pool{p}", encoder, settings={"encoder_pool": p, **budget}) for p in pools]
    name = "encoder_pool_dsc" if budget_s is None else f"encoder_pool_dsc_{budget_s:g}s"
    result = compare_encoders(arms, s, out / name, progress=True)
    rows = []
    for pool, run in zip(pools, result.runs):
        prov = json.loads((run.run_dir / "provenance.json").read_text())
        steps = int(run.finished["steps"])
        summary = run.summary.set_index(["metric", "region"])["mean"]
        rows.append({"encoder": encoder, "pool": pool, "decoder_grid": "x".join(map(str, prov.get("decoder_grid", []))),
                     "s_per_step": round(run.train_seconds / steps, 3), "steps": steps,
                     "DSC GM": round(float(summary[("DSC", "GM")]), 4), "DSC WM": round(float(summary[("DSC", "WM")]), 4),
                     "DSC mean": round(run.mean_dsc, 4),
                     "HD95 mean mm": round(float(summary[("HD95_strict", "average")]), 2),
                     "train_s": round(run.train_seconds, 1), "run_s": round(run.seconds, 1),
                     "load": round(os.getloadavg()[0], 1)})
    return pd.DataFrame(rows), result.note


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--encoder", default="litemedsam")
    ap.add_argument("--dsc", action="store_true", help="train and score one demo-task run per pool (minutes each)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="with --dsc: train every pool for this many seconds instead of the demo's steps")
    ap.add_argument("--crop", type=int, nargs=2, default=(64, 48))
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--pools", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dsc:
        t0 = time.perf_counter()
        table, note = measure_dsc(args.encoder, args.pools, args.out, args.budget_s)
        print(note)
        print(table.to_string(index=False))
        print(f"total {time.perf_counter() - t0:.0f} s, {torch.get_num_threads()} threads")
        suffix = "" if args.budget_s is None else f"_{args.budget_s:g}s"
        table.to_csv(args.out / f"encoder_pool_dsc{suffix}.csv", index=False)
        return 0
    rows = []
    for pool in args.pools:
        row = measure(args.encoder, tuple(args.crop), args.depth, args.batch, args.classes, pool, args.steps)
        print(json.dumps(row), flush=True)
        rows.append(row)
    (args.out / "encoder_pool_step.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
