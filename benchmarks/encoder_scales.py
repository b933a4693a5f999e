"""Encoder input scale on the real-MRI task: mean DSC and seconds per decoder step, through the pipeline.

vit_b (random) at encoder scales 1, 2, 4 and LiteMedSAM (pretrained, random) at its native size on
the MNI152 tissue task at 4 mm (64 px crop), every grid pooled to at most 16 x 16, 100 decoder
steps each, one trainer run per arm (``sam3dlib.study.mri_demo.compare_encoders``). The table
recorded in docs/PERFORMANCE.md (section 7) came from the demo's earlier in-memory loop (whole
training slabs, constant lr 3e-3); this script gives the trainer's figures. Usage::

    python benchmarks/encoder_scales.py --out results/bench
"""
import argparse
import time
from pathlib import Path

import torch

from sam3dlib.study.mri_demo import Arm, MRIDemoSettings, compare_encoders

s = MRIDemoSettings(resolution=4, slab=4, gap=2, crop=64, steps=100, eval_every=50, batch_size=2, lr=3e-3)
#: (name, encoder, pretrained, input scale, pool to a 16 x 16 grid)
ARMS = [("vit_b_x1", "vit_b", False, 1.0, 1), ("vit_b_x2", "vit_b", False, 2.0, 1), ("vit_b_x4", "vit_b", False, 4.0, 1),
        ("litemedsam", "litemedsam", True, None, 4), ("litemedsam_random", "litemedsam", False, None, 4)]
arms = [Arm(name, enc, pre, encoder_scale=scale, settings={"encoder_pool": pool}) for name, enc, pre, scale, pool in ARMS]
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", type=Path, default=Path("results/bench"))
args = p.parse_args()
t = time.time()
r = compare_encoders(arms, s, args.out / "encoder_scales")
r.table["pool"] = [a[4] for a in ARMS]
r.table["s/step"] = [round(run.train_seconds / s.steps, 3) for run in r.runs]
print(r.note)
print(r.table.to_string())
args.out.mkdir(parents=True, exist_ok=True)
r.table.to_csv(args.out / "encoder_scales.csv", index=False)
print("total", time.time() - t, "threads", torch.get_num_threads())
