"""Every paper configuration: each slice encoded once gives the whole-model path's maps.

For each experiment of the registry (Tables 1-5: Synapse, ACDC, Lung, BraTS with 4 modalities,
the no-skip decoders), the model of its config (``--profile``; ``smoke`` by default: the paper's
layers on the smoke crop with the random ``vit_tiny`` stand-in, so it runs on a CPU) predicts
the first test case of the dataset's phantom store twice, ``encode_once=False`` (the whole model
on every window) and ``True``, with mirroring on and off. Reported: windows, seconds of each
path, the largest probability difference and whether the label maps are identical. Usage::

    python benchmarks/encode_once_configs.py --out results/bench
    python benchmarks/encode_once_configs.py --out results/bench --profile paper --encoder vit_b --device cuda
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
from sam3dlib.inference.sliding_window import sliding_window_predict  # noqa: E402
from sam3dlib.modeling.factory import build_model  # noqa: E402
from sam3dlib.study.phantom_data import ensure_phantom_data  # noqa: E402
from sam3dlib.study.registry import EXPERIMENTS, get_config  # noqa: E402


def check(name: str, profile: str, encoder: str | None, device: torch.device, size: str) -> list[dict]:
    overrides = {"encoder": encoder} if encoder else {}
    cfg = get_config(name, profile, **overrides)
    store = PreparedDataset(Path(ensure_phantom_data(cfg.dataset, size=size)) / cfg.dataset)
    model = build_model(cfg, store.spec).to(device).eval()
    case = list(store.split("paper").test)[0]
    image = np.asarray(store.image(case))
    rows = []
    for mirror in ((0, 1, 2), None):
        out, secs = {}, {}
        for once in (False, True):
            t0 = time.perf_counter()
            out[once] = sliding_window_predict(model, image, tuple(cfg.patch_size), overlap=cfg.sw_overlap,
                                               mirror_axes=mirror, device=device, encode_once=once)
            secs[once] = round(time.perf_counter() - t0, 2)
        rows.append({"experiment": name, "profile": profile, "encoder": cfg.encoder, "case": case,
                     "volume": list(image.shape), "patch": list(cfg.patch_size), "mirror": mirror is not None,
                     "reference_s": secs[False], "encode_once_s": secs[True],
                     "max_abs_prob_diff": float((out[True] - out[False]).abs().max()),
                     "identical_labels": bool(torch.equal(out[True].argmax(0), out[False].argmax(0)))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--encoder", help="override the profile's encoder (e.g. vit_b)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="tiny", help="phantom size (tiny, small)")
    ap.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = [r for name in args.experiments for r in check(name, args.profile, args.encoder, torch.device(args.device),
                                                           args.size)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encode_once_configs.json").write_text(json.dumps(rows, indent=2))
    bad = [r for r in rows if r["max_abs_prob_diff"] > 1e-5 or not r["identical_labels"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} (experiment, mirroring) pairs equal within 1e-5 with identical labels")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
