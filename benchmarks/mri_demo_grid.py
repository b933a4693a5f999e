"""The MRI demo's settings: test-slab DSC and seconds per candidate, encoding counted.

Each (resolution, crop) is encoded once with the pretrained encoder on its own grid (timed), then
every candidate pools those embeddings to its ``max_grid`` and trains the decoder
(``sam3dlib.study.mri_demo.train_and_test``); ``total s`` = that encoding + the candidate's
decoder steps + its monitoring evaluations (wall; ``total cpu s``: the same in process CPU time,
all threads, which moves less with other jobs on the cores). Candidates: ``name:key=value,key=value`` over
:class:`~sam3dlib.study.mri_demo.MRIDemoSettings` fields. Usage::

    python benchmarks/mri_demo_grid.py --out results/bench "grid12:max_grid=16" "grid24:max_grid=32"
"""
import argparse
import dataclasses
import os
import time
from pathlib import Path

import pandas as pd
import torch

from sam3dlib.modeling.build import build_sam3d
from sam3dlib.study.mri_demo import (
    MRIDemoSettings,
    encode_cases,
    load_task,
    train_and_test,
)


def parse(text: str) -> tuple[str, MRIDemoSettings]:
    name, _, body = text.partition(":")
    fields = {f.name: f.type for f in dataclasses.fields(MRIDemoSettings)}
    changes = {}
    for item in filter(None, body.split(",")):
        key, value = item.split("=")
        if key not in fields:
            raise SystemExit(f"unknown setting {key!r} in {text!r}")
        changes[key] = float(value) if key == "lr" else (None if value == "None" else int(value))
        if key == "standardise":
            changes[key] = bool(int(value))
    return name, dataclasses.replace(MRIDemoSettings(), **changes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("candidates", nargs="+")
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache, rows = {}, []
    for name, s in map(parse, args.candidates):
        t0 = time.perf_counter()
        train, test, spec, note = load_task(s)
        key = (s.encoder, s.resolution, s.crop, s.slab, s.gap, s.train_slabs, s.test_slabs)
        if key not in cache:
            torch.manual_seed(s.seed)
            model = build_sam3d(spec.num_classes, image_size=s.crop, encoder=s.encoder)
            t1 = time.perf_counter()
            cpu1 = time.process_time()
            cache[key] = (encode_cases(model, {**train, **test}, s.crop), time.perf_counter() - t1,
                          time.process_time() - cpu1, sum(a[0].shape[0] for a in {**train, **test}.values()))
        unpooled, encode_s, encode_cpu, n_slices = cache[key]
        t2, cpu2 = time.perf_counter(), time.process_time()
        run = train_and_test(s, train, test, spec, unpooled=unpooled)
        decoder_s, decoder_cpu = time.perf_counter() - t2, time.process_time() - cpu2
        r = {"candidate": name, "resolution mm": s.resolution, "crop": s.crop, "max_grid": s.max_grid,
             "train slabs": len(train), "test slabs": len(test), "slices encoded": n_slices, "steps": s.steps,
             "batch": s.batch_size, "lr": s.lr, "standardise": s.standardise}
        for _, row in run.summary[run.summary["metric"] == "DSC"].iterrows():
            r[f"DSC {row['region']}"] = round(float(row["mean"]), 4)
        r.update({"curve": " ".join(f"{h['val_dice']:.3f}" for h in run.history), "encode s": round(encode_s, 1),
                  "decoder steps s": round(run.train_seconds, 1), "total s": round(encode_s + decoder_s, 1),
                  "total cpu s": round(encode_cpu + decoder_cpu, 1),
                  "load (1 min)": round(os.getloadavg()[0], 2), "split": note})
        rows.append(r)
        print({k: v for k, v in r.items() if k != "split"}, f"(this candidate {time.perf_counter() - t0:.0f} s)", flush=True)
        pd.DataFrame(rows).to_csv(args.out / "mri_demo_grid.csv", index=False)


if __name__ == "__main__":
    main()
