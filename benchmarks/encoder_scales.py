"""Encoder input scale on the real-MRI task: mean DSC and seconds per decoder step.

vit_b (random) at encoder scales 1, 2, 4 and LiteMedSAM (pretrained, random) at its native size on
the MNI152 tissue task at 4 mm (64 px crop), every grid pooled to at most 16 x 16, 100 decoder
steps each (``sam3dlib.study.mri_demo.compare_encoders``). Usage::

    python benchmarks/encoder_scales.py --out results/bench
"""
import argparse
import time
from pathlib import Path

import torch

from sam3dlib.study.mri_demo import (
            EncoderVariant,
            MRIDemoSettings,
            compare_encoders,
            embedding_pool,
)

# the settings of the recorded table (docs/PERFORMANCE.md section 7), pinned: the demo's defaults have moved on
s = MRIDemoSettings(resolution=4, slab=4, gap=2, crop=64, steps=100, eval_every=50, max_grid=16, batch_size=2, lr=3e-3,
                    poly_lr=False, train_windows=False)
variants = [EncoderVariant("vit_b", False, encoder_scale=1.0), EncoderVariant("vit_b", False, encoder_scale=2.0),
            EncoderVariant("vit_b", False, encoder_scale=4.0), EncoderVariant("litemedsam", True),
            EncoderVariant("litemedsam", False)]
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", type=Path, default=Path("results/bench"))
args = p.parse_args()
t = time.time()
r = compare_encoders(variants, s)
r.table["pool"] = [embedding_pool(s, v) for v in variants]
r.table["s/step"] = [round(run.train_seconds / s.steps, 3) for run in r.runs]
print(r.note)
print(r.table.to_string())
args.out.mkdir(parents=True, exist_ok=True)
r.table.to_csv(args.out / "encoder_scales.csv", index=False)
print("total", time.time() - t, "threads", torch.get_num_threads())
