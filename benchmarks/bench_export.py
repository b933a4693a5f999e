"""Peak memory added by exporting one prediction: class scores on the prepared grid ->
label map on the input's grid (:func:`sam3dlib.data.preprocess.restore_label`).

The case: a 512 x 512 x 147 CT (0.7 x 0.7 x 3 mm) with 14 classes, predicted at Synapse's target
spacing 3 x 0.76 x 0.76 mm, i.e. float32 scores 14 x 147 x 472 x 472 (2.0 GiB, held by the caller
before the export starts), resampled back to 147 x 512 x 512. Variants, each in a fresh process:

* ``all_classes`` - what the export did before: every class resampled, stacked, then argmax;
* ``class_by_class`` - :func:`~sam3dlib.data.preprocess.argmax_resampled` (one class at a time,
  running maximum), what ``restore_label`` does now.

"Added" = the process's peak RSS (``ru_maxrss``) after the export minus its peak before it; the
``tracemalloc`` peak of the export (numpy buffers) is given alongside.

Usage::

    python benchmarks/bench_export.py                  # full size, both variants (~2 min, ~7 GB RAM)
    python benchmarks/bench_export.py --scale 0.25     # in-plane size scaled (quick)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

GIB = 1024**3
VARIANTS = ("all_classes", "class_by_class")
CLASSES, DEPTH, SIDE, PREPARED_SIDE = 14, 147, 512, 472


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(variant: str, scale: float = 1.0) -> dict[str, Any]:
    """Run one export in this process; returns the peak memory it added (bytes) and its time."""
    from sam3dlib.data.preprocess import resample_probabilities, restore_label

    side, prep = round(SIDE * scale), round(PREPARED_SIDE * scale)
    scores = np.empty((CLASSES, DEPTH, prep, prep), dtype=np.float32)
    rng = np.random.default_rng(0)
    for k in range(CLASSES):  # filled class by class: no temporary larger than one class
        scores[k] = rng.random((DEPTH, prep, prep), dtype=np.float32)
    props = {"shape_after_crop": [DEPTH, side, side], "separate_axis": 0, "crop_bbox": [[0, DEPTH], [0, side], [0, side]],
             "original_shape": [side, side, DEPTH], "transpose": [2, 1, 0]}
    before = _peak_rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    if variant == "all_classes":
        lab = np.argmax(resample_probabilities(scores, props["shape_after_crop"], 0), axis=0).astype(np.uint8)
    elif variant == "class_by_class":
        lab = restore_label(scores, props)
    else:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"variant": variant, "scores_shape": list(scores.shape), "scores_gib": scores.nbytes / GIB,
            "output_shape": [side, side, DEPTH], "added_peak_rss_gib": (_peak_rss() - before) / GIB,
            "tracemalloc_peak_gib": traced / GIB, "export_s": seconds, "label_sum": int(lab.sum(dtype=np.int64))}


def run_all(scale: float = 1.0, in_process: bool = False) -> list[dict[str, Any]]:
    """Each variant in its own process (peak RSS is per process); rows for the bench report.

    ``in_process=True`` (the unit test's smoke run) measures here: the RSS figures then mix.
    """
    rows = []
    for variant in VARIANTS:
        if in_process:
            rows.append(measure(variant, scale))
            continue
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--scale", str(scale)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if len({r["label_sum"] for r in rows}) != 1:
        raise AssertionError(f"the variants exported different label maps: {rows}")
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| export variant | scores (GiB) | added peak RSS (GiB) | tracemalloc peak (GiB) | time (s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['scores_gib']:.2f} | {r['added_peak_rss_gib']:.2f} | "
              f"{r['tracemalloc_peak_gib']:.2f} | {r['export_s']:.1f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="in-plane size factor (1 = 512 x 512)")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.scale)))
        return
    rows = run_all(args.scale)
    print(markdown(rows))


if __name__ == "__main__":
    main()
