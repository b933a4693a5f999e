"""``make demo``: the main job end to end on the built-in default, in a few minutes on 2 CPU cores.

Synapse-like phantoms -> prepared store -> SAM3D with a ViT-B encoder (randomly initialised, or
``checkpoints/sam_vit_b_01ec64.pth`` when that file exists) in cached encoder mode -> a short
training -> evaluation of the phantom test cases -> Table 1's layout with our row. Written to
``results/demo/``: ``table1.csv`` (the paper's long format with our row), ``table1.md``,
``table1.html``, the figures of :func:`sam3dlib.study.table_figures.draw_figures` (``overlays.png``,
``dsc_bars.png``, ``per_case_dsc.png``, ``params_vs_dsc.png``, ``training_curves.png``),
``demo.json`` (measured time and DSC) and ``run/`` (the experiment's own run folder).
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam3dlib.modeling.constants import RANDOM_INIT
from sam3dlib.study import report
from sam3dlib.study.inputs import DEFAULT_ENCODER_WEIGHTS
from sam3dlib.utils.fileio import atomic_write_json

#: The demo's training budget on top of ``get_config("table1_synapse", "quick")``. The small
#: Synapse phantoms are 32 x 96 x 96 after preparation, so the crop covers a whole slice and the
#: cached encoder runs once per slice (8 cases x 32 slices, ~20 s for a random ViT-B on 2 cores).
#: 200 decoder steps of 2 x 8 x 96 x 96 follow. In so few steps the paper's SGD (momentum 0.99)
#: has not left the all-background solution, so the demo uses AdamW (measured: SGD lr 1e-2 gave
#: mean DSC 0.21 after 200 steps, AdamW lr 3e-3 0.38; ``docs/NOTEBOOKS.md``).
DEMO_PHANTOM_SIZE = "small"
DEMO_OVERRIDES: dict[str, Any] = dict(
    encoder="vit_b",
    encoder_mode="cached",
    patch_size=(8, 96, 96),
    batch_size=2,
    epochs=20,
    iterations_per_epoch=10,
    val_iterations=2,
    val_every=5,
    optimizer="adamw",
    lr=3e-3,
    num_workers=0,
    device="cpu",
    mirror_tta=False,
)


@dataclass
class DemoResult:
    """What the demo measured (also in ``demo.json``)."""

    out_dir: Path
    run_dir: Path
    mean_dsc: float
    seconds: float
    conditions: report.RunConditions
    table: report.ComparisonTable

    def message(self) -> str:
        return (f"mean foreground DSC on the phantom test cases: {self.mean_dsc:.3f} "
                f"({self.conditions.describe()}); wall time {self.seconds:.0f} s")


def demo_config(seed: int = 0, encoder_weights: str | os.PathLike | None = None, **overrides: Any):
    """The demo's :class:`~sam3dlib.config.ExperimentConfig` (Table 1 experiment, demo budget)."""
    from sam3dlib.study.registry import get_config

    values = {**DEMO_OVERRIDES, "seed": seed, "encoder_weights": os.fspath(encoder_weights) if encoder_weights else None, **overrides}
    return get_config("table1_synapse", profile="quick", **values)


def run_demo(
    out: str | os.PathLike = "results/demo",
    seed: int = 0,
    encoder_weights: str | os.PathLike | None = DEFAULT_ENCODER_WEIGHTS,
    cache_root: str | os.PathLike | None = None,
    phantom_size: str = DEMO_PHANTOM_SIZE,
    **overrides: Any,
) -> DemoResult:
    """Run the demo and write its table and figures under ``out``.

    Args:
        out: output folder (its ``run/`` subfolder is replaced on each call).
        seed: training seed.
        encoder_weights: SAM ViT-B weights file, used only if it exists (else a random ViT-B).
        cache_root: where the phantom store is built (default ``~/.cache/sam3dlib/phantoms``).
        phantom_size: ``small`` (default, :data:`DEMO_PHANTOM_SIZE`) or ``tiny`` phantoms.
        **overrides: changes to the demo's config (e.g. ``epochs=2`` for a test).

    Returns:
        :class:`DemoResult` with the measured mean foreground DSC and wall time.
    """
    from sam3dlib.data.specs import get_spec
    from sam3dlib.pipeline import run_experiment
    from sam3dlib.study.notebook_params import NotebookParams
    from sam3dlib.study.phantom_data import ensure_phantom_data
    from sam3dlib.study.seed_runs import conditions_from_run
    from sam3dlib.study.table_figures import draw_figures
    from sam3dlib.study.table_result import TableResult

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(encoder_weights) if encoder_weights is not None and Path(encoder_weights).is_file() else None
    data_dir = ensure_phantom_data("synapse", cache_root, seed=0, size=phantom_size)
    cfg = demo_config(seed, ckpt, **overrides)
    run_out = out / "run"
    if run_out.exists():
        shutil.rmtree(run_out)
    run_dir = Path(run_experiment(cfg, data_dir / "synapse", run_out))
    summary = report.read_summary(run_dir / "summary.csv")
    params = NotebookParams(encoder=cfg.encoder, encoder_weights=os.fspath(ckpt) if ckpt else None, profile="demo", seed=seed, seeds=(seed,), out_dir=out)
    cond = conditions_from_run(run_dir, params, "synapse", True, (seed,))
    if cond.profile != "demo":
        cond = report.RunConditions(cond.encoder, cond.encoder_weights, cond.data, "demo", cond.protocol, cond.seeds)
    spec = get_spec("synapse")
    ours = report.our_rows(report.seeds_summary([summary]), spec, cond, table=1)
    long = report.long_table(1, ours)
    table = report.comparison_table(1, ours)
    files = report.write_table_files(out, "table1", long, [table])
    import pandas as pd

    per_case = pd.read_csv(run_dir / "per_case.csv").assign(table="1", method="SAM3D" + report.OURS_SUFFIX, seed=seed)
    result = TableResult("1", out, cond, long, [table], per_case, {cfg.name: [run_dir]}, {"synapse": data_dir}, files)
    figs = draw_figures(result)
    for key, path in figs.items():  # flat names in results/demo/
        os.replace(path, out / f"{key}.png")
    shutil.rmtree(out / "figures", ignore_errors=True)
    mean = report.mean_foreground_dsc(summary)
    seconds = time.perf_counter() - t0
    record = {
        "mean_foreground_dsc": round(mean, 4),
        "seconds": round(seconds, 1),
        "conditions": cond.as_columns(),
        "encoder_weights": cond.encoder_weights if ckpt is not None else RANDOM_INIT,
        "config": cfg.to_dict(),
        "description": cond.describe(),
    }
    atomic_write_json(out / "demo.json", record)
    return DemoResult(out, run_dir, mean, seconds, cond, table)


__all__ = ["DEMO_OVERRIDES", "DemoResult", "demo_config", "run_demo"]
