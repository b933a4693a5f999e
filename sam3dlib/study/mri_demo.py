"""``make demo``: SAM3D with a real pretrained encoder (LiteMedSAM) on a real MRI, through the product's pipeline.

Task (:mod:`sam3dlib.data.mni`): grey / white matter of the MNI152 2009a T1 template that
nilearn installs, at 3 mm. :func:`write_mni152_task` writes it as an MSD raw folder: the
superior slices are cut into test slabs of 6 slices, every brain slice below them (3 slices
left out) is one training case (different anatomy), and ``splits_final.json`` holds that
split as the store's one fold. Then the same road as any dataset:

1. ``prepare``: the planner on the raw folder, with the demo's plan values imposed (crop
   6 x 80 x 80, the whole 65 x 77 slice; batch 2; 3 mm; z-score inside the head, so the crop's
   padding equals the background);
2. ``train``: the :class:`~sam3dlib.training.trainer.Trainer` under the ``demo`` profile
   (:data:`sam3dlib.config.DEMO_PROFILE`: cached LiteMedSAM features, 150 AdamW steps with
   poly decay per step on random 6-slice windows, validation on the test slabs as a monitor);
3. ``predict`` + ``evaluate``: :func:`sam3dlib.pipeline.evaluate_run` with ``latest.pt`` (no
   checkpoint selection on the test slabs): sliding windows, NIfTI predictions on the original
   grid, scored against the label files (DSC; HD95 in voxels and mm) per slab, averaged.

Each arm (:class:`Arm`: ``pretrained``, and with ``compare_random`` the same architecture
randomly initialised) is one run folder, ``<out>/runs/<arm>``, that ``sam3d predict --run``
takes. Written to ``out`` besides: ``table.csv`` / ``table.md`` (DSC and HD95 in mm per class
and arm), ``per_slab.csv``, ``overlays_<arm>.png``, ``curves.png``, ``log_<arm>.csv``,
``demo.json`` and ``data/`` (the raw folder and its store).
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from sam3dlib.utils.errors import ConfigError
from sam3dlib.utils.fileio import atomic_write_json, atomic_write_text

#: the demo's embedding pool per encoder, where it differs from the registry's default (1).
#: LiteMedSAM's 64 x 64 grid pooled x2 (decoder grid 20 x 20): within the demo's few minutes 150
#: steps at pool 2 (mean test DSC 0.567, 77 s of training) beat 50 at pool 1 (0.463, 90 s); pool 1
#: wins at longer budgets (docs/PERFORMANCE.md, "Encoder pooling").
DEMO_POOLS = {"litemedsam": 2}


@dataclass(frozen=True)
class MRIDemoSettings:
    """The demo's task and budget (chosen from measurements, ``docs/PERFORMANCE.md``)."""

    encoder: str = "litemedsam"
    resolution: int = 3
    slab: int = 6
    gap: int = 3
    #: the whole 65 x 77 slice; LiteMedSAM's 64 x 64 grid -> the decoder's 40 x 40 (one upsampling)
    crop: int = 80
    steps: int = 150
    batch_size: int = 2
    lr: float = 2e-3
    #: steps per epoch: the trainer validates (a monitor on the test slabs) and logs after each
    eval_every: int = 50
    seed: int = 0
    #: the plan's normalisation of the T1 channel: nnU-Net's z-score inside the nonzero mask
    #: (background 0, the value the crop is padded with) or over the whole case (``zscore``)
    normalization: str = "zscore_nonzero"
    #: keep only the first (most inferior) test slabs (None: all), for quick runs
    test_slabs: int | None = None
    #: the embedding pool (``encoder_pool``); None: :data:`DEMO_POOLS`, else the encoder's default
    encoder_pool: int | None = None

    @property
    def pool(self) -> int | None:
        """The pool the demo's SAM3D arms use (None: the encoder's registry default)."""
        return self.encoder_pool if self.encoder_pool is not None else DEMO_POOLS.get(self.encoder)

    def check(self) -> None:
        """ConfigError naming the first setting that cannot run (counts must be >= 1, lr > 0)."""
        from sam3dlib.utils.values import fail

        for name in ("resolution", "slab", "crop", "steps", "batch_size", "eval_every", "test_slabs", "encoder_pool"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1) and not (name in ("test_slabs", "encoder_pool") and value is None):
                raise fail(f"demo setting {name}", value, "an integer >= 1")
        if self.gap < 0:
            raise fail("demo setting gap", self.gap, "an integer >= 0")
        if not self.lr > 0:
            raise fail("demo setting lr", self.lr, "a learning rate > 0")

    def epochs(self) -> tuple[int, int]:
        """``(epochs, iterations per epoch)`` for ``steps``: epochs of ``eval_every`` steps when
        they divide, else one epoch of ``steps``."""
        if self.steps % self.eval_every == 0:
            return self.steps // self.eval_every, self.eval_every
        return 1, self.steps


#: ``--compare``'s from-scratch baseline (a :data:`sam3dlib.modeling.models.MODELS` name)
BASELINE_MODEL = "nnunet"
#: a budget-stopped baseline may run up to this many times the demo's steps (its budget stops it first)
BUDGET_STEP_FACTOR = 20


@dataclass(frozen=True)
class Arm:
    """One run of the demo: a name (its run folder and file suffix), the model and the encoder's weights."""

    name: str
    encoder: str
    pretrained: bool = True
    #: an encoder weights file (``encoder_weights``); None: the encoder's package weights, if any
    weights: str | None = None
    encoder_scale: float | None = None
    #: further config values of this arm (e.g. a baseline's)
    settings: dict = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The model registry name this arm trains (``sam3d`` unless its settings name a baseline)."""
        from sam3dlib.modeling.models import SAM3D_MODEL

        return self.settings.get("model", SAM3D_MODEL)

    @property
    def is_baseline(self) -> bool:
        """A network without the frozen slice encoder, trained from scratch on the volume."""
        from sam3dlib.modeling.models import get_model_entry

        return not get_model_entry(self.model).frozen_encoder

    @property
    def has_weights(self) -> bool:
        """Pretrained weights are used: a file, or the encoder's package (a ViT without a file is random)."""
        from sam3dlib.modeling.encoders import get_encoder_spec

        return (not self.is_baseline and self.pretrained
                and (self.weights is not None or get_encoder_spec(self.encoder).weights == "package"))

    @property
    def label(self) -> str:
        if self.is_baseline:
            budget = self.settings.get("time_budget_s")
            return f"{self.model} (from scratch" + (f", {float(budget):.0f} s budget)" if budget else ")")
        weights = ("pretrained" if self.weights is None else os.path.basename(self.weights)) if self.has_weights \
            else "random init"
        scale = "" if self.encoder_scale is None else f", scale {self.encoder_scale:g}"
        return f"{self.encoder} ({weights}{scale})"

    def overrides(self) -> dict:
        """The config values that make this arm (encoder, weights, scale, its own settings)."""
        values = {"encoder": self.encoder, "encoder_scale": self.encoder_scale, **self.settings}
        if self.is_baseline:
            return values
        if not self.pretrained:
            values["encoder_weights"] = "random"
        elif self.weights is not None:
            values["encoder_weights"] = self.weights
        return values


def demo_arms(settings: MRIDemoSettings, compare_random: bool = False) -> list[Arm]:
    """The arms to run: ``pretrained``, and ``random`` (same architecture, random init) when asked.

    Raises:
        ConfigError: ``compare_random`` with an encoder that has no weights here (both random).
    """
    arms = [Arm("pretrained", settings.encoder)]
    if compare_random:
        if not arms[0].has_weights:
            raise ConfigError(f"compare_random compares pretrained weights with a random initialisation, but encoder "
                              f"{settings.encoder} has no weights here (no checkpoint file): both runs would be random")
        arms.append(Arm("random", settings.encoder, pretrained=False))
    return arms


def baseline_arm(settings: MRIDemoSettings, budget_s: float, model: str = BASELINE_MODEL) -> Arm:
    """``model`` trained from scratch for ``budget_s`` seconds (``time_budget_s``), the budget of
    a SAM3D arm: its feature encoding plus its training (:attr:`ArmRun.budget_seconds`).

    The budget stops it (up to :data:`BUDGET_STEP_FACTOR` x the demo's steps are planned) and
    its poly schedule runs on the budget (:func:`sam3dlib.training.optim.poly_step_lr`): equal
    wall-clock budgets, as nnU-Net Revisited (Isensee et al., MICCAI 2024) compares methods.
    """
    epochs, _ = settings.epochs()
    return Arm(model, settings.encoder,
               settings={"model": model, "time_budget_s": round(float(budget_s), 1), "epochs": epochs * BUDGET_STEP_FACTOR})


def plan_values(settings: MRIDemoSettings) -> dict:
    """The plan values the demo imposes on the planner (crop, batch, spacing, normalisation, the
    regions' short names)."""
    s = settings
    return {"patch_size": [s.slab, s.crop, s.crop], "batch_size": s.batch_size,
            "target_spacing": [float(s.resolution)] * 3, "normalization": [s.normalization],
            "regions": {"GM": [1], "WM": [2]}}


def prepare_task(settings: MRIDemoSettings, data_dir: str | os.PathLike, progress: bool = True):
    """Write the MNI152 task's raw folder under ``data_dir/raw`` and prepare it into ``data_dir/store``.

    Returns:
        The :class:`~sam3dlib.data.store.PreparedDataset` (rebuilt on every call).
    """
    from sam3dlib.data.mni import write_mni152_task
    from sam3dlib.pipeline import prepare

    s, data_dir = settings, Path(data_dir)
    raw = data_dir / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    write_mni152_task(raw, s.resolution, s.slab, s.gap, train_block=True, test_slabs=s.test_slabs)
    return prepare(raw, data_dir / "store", plan_values(s), progress=progress, force=True)


def arm_config(settings: MRIDemoSettings, arm: Arm, spec):
    """The ``custom`` experiment of one arm on the task's store under the ``demo`` profile."""
    from sam3dlib.config import store_config

    epochs, iterations = settings.epochs()
    values = {"seed": settings.seed, "lr": settings.lr, "epochs": epochs, "iterations_per_epoch": iterations}
    if settings.pool is not None and not arm.is_baseline and arm.encoder == settings.encoder:
        values["encoder_pool"] = settings.pool
    values.update(arm.overrides())
    return store_config(spec, "demo", 0, **values)


@dataclass
class ArmRun:
    """One arm's run folder and its scores on the test slabs."""

    arm: Arm
    run_dir: Path
    per_case: pd.DataFrame
    summary: pd.DataFrame
    encoder_source: str
    encoder_sha256: str | None
    seconds: float  # the whole arm: model, encoding, epochs, prediction and scoring
    #: the run's ``finished.json`` (steps, trainable parameters, feature and training seconds, what stopped it)
    finished: dict = field(default_factory=dict)

    @property
    def train_seconds(self) -> float:
        """Seconds of the epochs (steps, validation, checkpoints), as the trainer recorded them."""
        return float(self.finished.get("train_seconds") or 0.0)

    @property
    def weights_label(self) -> str:
        """The encoder weights' sha256, ``random init``, or ``no encoder`` for a baseline."""
        return "no encoder" if self.arm.is_baseline else self.encoder_sha256 or "random init"

    @property
    def budget_seconds(self) -> float:
        """Seconds this arm spent before its model could predict: feature encoding plus training."""
        return float(self.finished.get("feature_seconds") or 0.0) + self.train_seconds

    @property
    def title(self) -> str:
        """The arm's label with its weights' sha256 (first 12 hex digits), for figure titles."""
        return f"{self.arm.label}, sha256 {self.encoder_sha256[:12]}" if self.encoder_sha256 else self.arm.label

    @property
    def mean_dsc(self) -> float:
        rows = self.summary[(self.summary["region"] == "average") & (self.summary["metric"] == "DSC")]
        return float(rows["mean"].iloc[0])


def run_arm(settings: MRIDemoSettings, arm: Arm, store, out: str | os.PathLike, progress: bool = True) -> ArmRun:
    """Train one arm with the trainer, predict and score the test slabs with its ``latest.pt``."""
    from sam3dlib.pipeline import run_experiment

    config = arm_config(settings, arm, store.spec)
    t0 = time.perf_counter()
    run = Path(run_experiment(config, store.root, Path(out) / "runs" / arm.name, progress=progress, force=True,
                              which="latest"))
    return read_arm_run(arm, run, time.perf_counter() - t0)


def read_arm_run(arm: Arm, run: Path, seconds: float) -> ArmRun:
    """One arm's :class:`ArmRun` from its finished run folder (``seconds``: the arm's whole wall time)."""
    from sam3dlib.modeling.constants import RANDOM_INIT
    from sam3dlib.utils.fileio import read_json

    prov = read_json(run / "provenance.json", ValueError, expect=dict)
    sha = prov.get("encoder_sha256")
    source = "" if arm.is_baseline else str(prov.get("encoder_weights", prov.get("encoder_checkpoint")))
    return ArmRun(arm, run, pd.read_csv(run / "per_case.csv"), pd.read_csv(run / "summary.csv"), source,
                  None if sha in (None, RANDOM_INIT) or arm.is_baseline else sha,
                  seconds, read_json(run / "finished.json", ValueError, expect=dict))


#: summary metric -> the demo table's name (HD95 in mm, the ground truth's spacing)
TABLE_METRICS = {"DSC": "DSC", "HD95_strict": "HD95"}


def results_table(runs: list[ArmRun]) -> pd.DataFrame:
    """One row per arm: DSC and HD95 (mm) per class and their means, the arm's seconds."""
    rows = []
    for run in runs:
        row = {"arm": run.arm.name, "model": run.arm.label, "sha256": run.weights_label[:12]}
        for _, r in run.summary.iterrows():
            if r["metric"] in TABLE_METRICS:
                name = TABLE_METRICS[r["metric"]]
                row[f"{name} {r['region']}"] = round(float(r["mean"]), 4 if name == "DSC" else 2)
        row["trainable params"] = run.finished.get("trainable_parameters")
        row["steps"] = run.finished.get("steps")
        row["encode + train s"] = round(run.budget_seconds, 1)
        row["total s"] = round(run.seconds, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def per_slab_table(runs: list[ArmRun]) -> pd.DataFrame:
    """One row per arm and test slab (case ids number the slabs inferior to superior): DSC, HD95 (mm)."""
    frames = [run.per_case[run.per_case["metric"].isin(TABLE_METRICS)].assign(model=run.arm.label)
              for run in runs]
    wide = pd.concat(frames).pivot_table(index=["model", "case_id"], columns=["metric", "region"], values="value")
    wide.columns = [f"{TABLE_METRICS[m]} {r}" for m, r in wide.columns]
    return wide.reset_index()


def _markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def split_note(store, settings: MRIDemoSettings) -> str:
    """What trains and what tests, in words (from the store's fold and the raw folder's ``split.json``)."""
    from sam3dlib.data.mni import split_json

    split = store.split(fold=0)
    slices = split_json(Path(store.meta["source_root"]) / "split.json")["slices"]
    train_z = [z for c in split.train for z in slices[c]]
    test_z = [z for c in split.test for z in slices[c]]
    return (f"train: random windows of {settings.slab} slices from z {min(train_z)}-{max(train_z) - 1}; test: "
            f"{len(split.test)} slabs (z {min(test_z)}-{max(test_z) - 1}), superior to the training slices: "
            f"different anatomy; {settings.resolution} mm voxels")


def slab_note(per_case: pd.DataFrame, case_id: str, z0: int, z1: int, s: MRIDemoSettings) -> str:
    """The overlay's line about its slab: where it lies in the volume (slices ``z0 <= z < z1``) and its
    own DSC per class (%)."""
    pc = per_case[(per_case["case_id"] == case_id) & (per_case["metric"] == "DSC")]
    dsc = ", ".join(f"{r.region} {100 * float(r.value):.1f}" for r in pc.itertuples() if r.region != "average")
    return (f"test slab {case_id}: slices {z0}-{z1 - 1} of the {s.resolution} mm volume (inferior to "
            f"superior); this slab's DSC %: {dsc}")


def write_outputs(out: Path, runs: list[ArmRun], store, settings: MRIDemoSettings, note: str) -> pd.DataFrame:
    """``table.csv`` / ``.md``, ``per_slab.csv``, ``log_<arm>.csv``, ``overlays_<arm>.png``, ``curves.png``."""
    from sam3dlib.study.report import save_figure
    from sam3dlib.study.report_figures import plot_overlays, plot_training_curves
    from sam3dlib.study.table_figures import overlay_arrays
    from sam3dlib.utils.fileio import atomic_write_csv

    s = settings
    table = results_table(runs)
    atomic_write_csv(out / "table.csv", table)
    atomic_write_csv(out / "per_slab.csv", per_slab_table(runs))
    epochs, iterations = s.epochs()
    atomic_write_text(out / "table.md", (
        f"# SAM3D on a real MRI: MNI152 2009a grey/white matter, {s.resolution} mm\n\n{note}.\n"
        f"Labels: the template's own tissue probability maps, thresholded (not manual segmentations). "
        f"HD95 in mm, the authors' evaluation scripts' convention: 0 when a class is absent from the prediction "
        f"or the reference, "
        f"so read it beside the DSC. Means over the test slabs (per slab: per_slab.csv). The trainer, `demo` "
        f"profile: {epochs * iterations} decoder steps ({epochs} epochs of {iterations}), batch {s.batch_size}, "
        f"AdamW lr {s.lr} with poly decay per step; predictions with latest.pt.\n\n" + _markdown(table)))
    from sam3dlib.data.mni import split_json

    slabs = split_json(Path(store.meta["source_root"]) / "split.json")["slices"]  # {case: [z0, z1]} in the volume
    logs = []
    for run in runs:
        logs.append(shutil.copyfile(run.run_dir / "log.csv", out / f"log_{run.arm.name}.csv"))
        test = sorted(store.split(fold=0).test)
        arrays = overlay_arrays(run.run_dir, store.root, test[len(test) // 2])
        if arrays is not None:
            image, gt, pred, cid = arrays
            z0, z1 = slabs[cid]
            fig = plot_overlays(image, gt, pred, None, store.spec, case_id=f"{cid} ({run.title})", slice_offset=z0,
                                note=slab_note(run.per_case, cid, z0, z1, s))
            save_figure(fig, out / f"overlays_{run.arm.name}.png")
    timed = any(r.arm.is_baseline for r in runs)  # an equal-time comparison: curves against seconds
    fig = plot_training_curves(logs, labels=[r.title for r in runs], x="seconds" if timed else "epoch",
                               offsets=[float(r.finished.get("feature_seconds") or 0.0) for r in runs])
    fig.suptitle(f"Training curves on MNI152 2009a, {s.resolution} mm (test slabs superior to the "
                 f"training slices)\n{'; '.join(r.title for r in runs)}", fontsize=10)
    fig.axes[1].set_ylabel("test-slab DSC (monitor only, no selection)")
    save_figure(fig, out / "curves.png")
    return table


@dataclass
class Comparison:
    """Arms compared on one task: the table, each arm's run, the split in words and the store."""

    table: pd.DataFrame
    runs: list[ArmRun]
    note: str
    store: object


def compare_encoders(arms: list[Arm], settings: MRIDemoSettings | None = None, out: str | os.PathLike = "results/encoders",
                     progress: bool = False) -> Comparison:
    """Train and test every arm on the same task, store and budget (one run folder each under ``out/runs``)."""
    s = settings or MRIDemoSettings()
    s.check()
    store = prepare_task(s, Path(out) / "data", progress)
    runs = [run_arm(s, arm, store, out, progress) for arm in arms]
    return Comparison(results_table(runs), runs, split_note(store, s), store)


def run_mri_demo(out: str | os.PathLike = "results/demo", compare_random: bool = False,
                 settings: MRIDemoSettings | None = None, progress: bool = True, compare_baseline: bool = False) -> dict:
    """Run the demo's arms through the pipeline; write the table, figures and ``demo.json``; return the record.

    ``compare_baseline`` adds :data:`BASELINE_MODEL` trained from scratch with the pretrained
    arm's budget of seconds (:func:`baseline_arm`).
    """
    import torch

    s = settings or MRIDemoSettings()
    s.check()
    arms = demo_arms(s, compare_random)
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = prepare_task(s, out / "data", progress)
    note = split_note(store, s)
    runs = [run_arm(s, arm, store, out, progress) for arm in arms]
    if compare_baseline:
        runs.append(run_arm(s, baseline_arm(s, runs[0].budget_seconds), store, out, progress))
    table = write_outputs(out, runs, store, s, note)
    sam3d_runs = [r for r in runs if not r.arm.is_baseline]
    record = {
        "task": "MNI152 2009a tissue (background / grey matter / white matter)",
        "split": note,
        "mean_foreground_dsc": {r.arm.label: round(r.mean_dsc, 4) for r in runs},
        "encoders": {r.arm.label: {"source": r.encoder_source, "sha256": r.encoder_sha256 or "random init",
                                   "train_seconds": round(r.train_seconds, 1)} for r in sam3d_runs},
        "arms": {r.arm.name: {"label": r.arm.label, "model": r.arm.model, "run": str(r.run_dir),
                              "source": r.encoder_source,
                              "sha256": r.weights_label,
                              "train_seconds": round(r.train_seconds, 1), "budget_seconds": round(r.budget_seconds, 1),
                              "steps": r.finished.get("steps"), "stopped_by": r.finished.get("stopped_by"),
                              "trainable_parameters": r.finished.get("trainable_parameters"),
                              "seconds": round(r.seconds, 1)} for r in runs},
        "data": str(store.root),
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),  # all threads; wall time on a shared machine is longer
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "threads": torch.get_num_threads(),
        "settings": {**asdict(s), "encoder_pool": s.pool},  # the pool used (DEMO_POOLS when unset)
    }
    atomic_write_json(out / "demo.json", record)
    record["table"] = table
    return record


__all__ = ["BASELINE_MODEL", "Arm", "ArmRun", "Comparison", "MRIDemoSettings", "arm_config", "baseline_arm",
           "compare_encoders", "demo_arms",
           "prepare_task", "results_table", "run_arm", "run_mri_demo"]
