"""nnU-Net's inference options measured: ``--no-mirror`` and ``--step-size`` against time and test DSC.

Every setting predicts the same test cases of a trained run (``--run RUN --data STORE``; without
them a smoke run is trained here on a Synapse phantom: a random ``vit_tiny`` stand-in, 3 epochs,
so its DSC says what the options change, not what SAM3D reaches). Reported per setting: windows
per case, seconds (all cases, the encode-once path), and the mean foreground DSC on the
preprocessed grid (argmax against the store's label). Usage::

    python benchmarks/predict_options.py --out results/bench
    python benchmarks/predict_options.py --out results/bench --run runs/mni --data data/mni
    python benchmarks/predict_options.py --out DIR --run results/demo/runs/pretrained \
        --data results/demo/data/store --stack-test      # the demo's test slabs as one 18-slice block
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sam3dlib.data.store import PreparedDataset  # noqa: E402
from sam3dlib.evaluation.metrics import dice  # noqa: E402
from sam3dlib.inference.encode_once import plan_case  # noqa: E402
from sam3dlib.inference.predictor import load_run, predict_probabilities  # noqa: E402
from sam3dlib.inference.sliding_window import mirror_combinations  # noqa: E402

SETTINGS = [(True, 0.5), (False, 0.5), (True, 0.75), (False, 0.75), (False, 1.0), (True, 0.25)]


def smoke_run(tmp: Path) -> tuple[Path, Path]:
    """Train the smoke run on a tiny Synapse phantom (as the test suite's fixture)."""
    from sam3dlib.data.phantoms import write_phantom
    from sam3dlib.data.prepare import prepare_dataset
    from sam3dlib.pipeline import run_experiment
    from sam3dlib.study.registry import get_config

    raw = write_phantom("synapse", tmp / "raw", n_cases=4, size="tiny")
    prepare_dataset("synapse", raw, tmp / "store")
    cfg = get_config("table1_synapse", "smoke", epochs=3, iterations_per_epoch=8)
    return Path(run_experiment(cfg, tmp / "store", tmp / "run", progress=False)), tmp / "store"


def stack_cases(store: PreparedDataset, cases: list[str], volumes: dict) -> tuple[np.ndarray, np.ndarray]:
    """The cases' cropped image and label placed back at their crop boxes (in-plane) and stacked along z."""
    boxes = [store.properties(c)["crop_bbox"] for c in cases]
    h, w = max(b[1][1] for b in boxes), max(b[2][1] for b in boxes)
    images, labels = [], []
    for case, box in zip(cases, boxes):
        image, label = volumes[case]
        (y0, y1), (x0, x1) = box[1], box[2]
        canvas = np.zeros((image.shape[0], image.shape[1], h, w), image.dtype)
        canvas[:, :, y0:y1, x0:x1] = image
        images.append(canvas)
        canvas = np.zeros((label.shape[0], h, w), label.dtype)
        canvas[:, y0:y1, x0:x1] = label
        labels.append(canvas)
    return np.concatenate(images, axis=1), np.concatenate(labels, axis=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--run", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", type=Path, default=Path("/tmp/predict_options"))
    ap.add_argument("--stack-test", action="store_true",
                    help="predict the test cases stacked along z as one volume (the MNI task's test slabs are "
                    "contiguous: the windows then overlap in depth)")
    args = ap.parse_args()
    run, data = (args.run, args.data) if args.run else smoke_run(args.work)
    base = load_run(run, args.device)
    store = PreparedDataset(data)
    cases = sorted(store.split(base.config.protocol).test)
    labels = [k for k in range(1, store.spec.num_classes)]
    volumes = {c: (np.asarray(store.image(c)), np.asarray(store.label(c))) for c in cases}
    if args.stack_test:
        volumes = {"stacked": stack_cases(store, cases, volumes)}
    rows = []
    for mirror, step in SETTINGS:
        loaded = base.with_options(mirror=mirror, step_size=step)
        t0, dscs, windows = time.perf_counter(), [], 0
        for image, gt in volumes.values():
            pred = predict_probabilities(loaded, image).argmax(0)
            dscs += [dice(pred == k, gt == k) for k in labels if (gt == k).any()]
            windows += plan_case(loaded.model, image.shape[1:], (base.config.patch_size[0], *loaded.model.crop_hw),
                                 loaded.overlap, mirror_combinations(loaded.mirror_axes)).windows
        rows.append({"mirror": mirror, "step_size": step, "windows_per_case": windows / len(volumes),
                     "seconds": round(time.perf_counter() - t0, 2), "mean_fg_dsc": round(float(np.mean(dscs)), 4),
                     "cases": len(volumes), "run": str(run), "encoder": base.config.encoder,
                     "threads": torch.get_num_threads()})
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predict_options.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
