"""The trainer's step for each embedding pool of a fine-grid encoder (the MNI task's LiteMedSAM run).

``sam3d train custom --set encoder=litemedsam`` on the MNI tissue task (3 mm, patch 8 x 64 x 48,
3 classes, batch 2) feeds the decoder LiteMedSAM's 64 x 64 grid resampled to the crop's 64 x 48
when ``encoder_pool`` is 1. For each pool this times the trainer's own step
(:func:`sam3dlib.training.step.decoder_update`: decoder forward, Dice+CE with deep supervision,
backward, SGD, cached-mode features already in memory), after one warm-up step, and states the
decoder grid and upsamplings. Usage::

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--encoder", default="litemedsam")
    ap.add_argument("--crop", type=int, nargs=2, default=(64, 48))
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--pools", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for pool in args.pools:
        row = measure(args.encoder, tuple(args.crop), args.depth, args.batch, args.classes, pool, args.steps)
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder_pool_step.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
