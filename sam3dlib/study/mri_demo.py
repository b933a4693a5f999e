"""``make demo``: SAM3D with a real pretrained encoder (LiteMedSAM) on a real MRI, in minutes on a CPU.

Task (:mod:`sam3dlib.data.mni`): grey / white matter of the MNI152 2009a T1 template that
nilearn installs, at 3 mm, z-scored once over the volume. The superior slices are cut into test
slabs of 6 slices; every brain slice below them, 3 slices left out, trains (different anatomy).
Each slice is padded to the 80 x 80 crop (the whole 65 x 77 slice) and encoded once by the
frozen encoder (LiteMedSAM: resized to its native 256 px and min-max scaled, a 64 x 64 grid);
the embeddings are area-resampled to the decoder's 40 x 40 grid (80 / 2: one upsampling;
``max_grid`` pools coarser for cheaper runs). SAM3D's decoder (deep supervision, Dice+CE)
trains with AdamW and nnU-Net's poly learning-rate decay on random windows of 6 slices from the
training block (nnU-Net's random patches along z). The test slabs are predicted in one pass
(the crop is the whole slice) and scored per slab and class (DSC, HD95 in mm), then averaged
over the slabs (the paper's per-case mean). With ``compare_random`` the same architecture
randomly initialised runs with the same grid and budget beside it.

This is a compact in-memory loop over cached embeddings (the encoder is frozen, so the
decoder sees exactly what the trainer's cached mode would give it); it reuses the library's
model builder, loss, metrics and figures. The full trainer runs on this task once the
user-dataset path reads it (``write_mni152_task`` writes the MSD layout).

Written to ``out``: ``table.csv`` / ``table.md`` (DSC and HD95 per class and encoder),
``per_slab.csv`` (the same per test slab, inferior to superior),
``overlays_<encoder>.png``, ``curves.png``, ``log_<encoder>.csv`` and ``demo.json``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sam3dlib.utils.errors import ConfigError
from sam3dlib.utils.fileio import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class MRIDemoSettings:
    """The demo's task and budget (chosen from measurements, ``docs/PERFORMANCE.md``)."""

    encoder: str = "litemedsam"
    resolution: int = 3
    slab: int = 6
    gap: int = 3
    crop: int = 80  # the whole 65 x 77 slice; LiteMedSAM's 64 x 64 grid -> the decoder's 40 x 40 (one upsampling)
    #: embeddings finer than this grid are average-pooled down to it (``encoder_pool``), per encoder
    max_grid: int = 64
    steps: int = 150
    batch_size: int = 2
    lr: float = 2e-3
    #: nnU-Net's poly decay of the learning rate to 0 over ``steps`` (the paper's schedule); False: constant
    poly_lr: bool = True
    eval_every: int = 50
    seed: int = 0
    #: z-score each embedding channel with the training slabs' mean and std before the decoder
    standardise: bool = False
    #: train on random windows of ``slab`` slices from one block of every slice below the gap
    #: (nnU-Net's random patches along z); False: on the whole training slabs
    train_windows: bool = True
    #: keep only this many training slabs' worth of slices (those nearest the test slabs) / test slabs (None: all)
    train_slabs: int | None = None
    test_slabs: int | None = None


@dataclass(frozen=True)
class EncoderVariant:
    """One encoder setting to compare: registry name, weights, input scale."""

    encoder: str
    pretrained: bool = True
    checkpoint: str | None = None
    encoder_scale: float | None = None

    @property
    def has_weights(self) -> bool:
        """Pretrained weights are used: a file, or the encoder's package (a ViT without a file is random)."""
        from sam3dlib.modeling.encoders import get_encoder_spec

        return self.pretrained and (self.checkpoint is not None or get_encoder_spec(self.encoder).weights == "package")

    @property
    def label(self) -> str:
        weights = ("pretrained" if self.checkpoint is None else os.path.basename(self.checkpoint)) if self.has_weights \
            else "random init"
        scale = "" if self.encoder_scale is None else f", scale {self.encoder_scale:g}"
        return f"{self.encoder} ({weights}{scale})"


@dataclass
class EncoderRun:
    """One encoder's result on the test slabs."""

    label: str
    pretrained: bool
    encoder_source: str
    encoder_sha256: str | None
    per_case: pd.DataFrame
    summary: pd.DataFrame
    history: list[dict]
    encode_seconds: float
    train_seconds: float  # decoder steps only (the monitoring evaluations excluded)
    predictions: dict[str, np.ndarray]

    @property
    def title(self) -> str:
        """The run's label with its weights' sha256 (first 12 hex digits), for figure titles."""
        return f"{self.label}, sha256 {self.encoder_sha256[:12]}" if self.encoder_sha256 else self.label

    @property
    def mean_dsc(self) -> float:
        rows = self.summary[(self.summary["region"] == "average") & (self.summary["metric"] == "DSC")]
        return float(rows["mean"].iloc[0])


def _pad(a: np.ndarray, crop: int, value: float = 0) -> np.ndarray:
    """``D x h x w`` -> ``D x crop x crop``, filled with ``value`` below and right of the slices."""
    d, h, w = a.shape
    if h > crop or w > crop:
        raise ValueError(f"slices of {h} x {w} do not fit the {crop} px crop; use a coarser resolution")
    out = np.full((d, crop, crop), value, a.dtype)
    out[:, :h, :w] = a
    return out


def _normalise(image: np.ndarray) -> np.ndarray:
    """nnU-Net's non-CT scheme: z-score over the volume (the whole template, before it is cut into cases)."""
    return ((image - image.mean()) / (image.std() + 1e-8)).astype(np.float32)


def encode_cases(model, cases: dict[str, tuple[np.ndarray, np.ndarray]], crop: int) -> dict[str, torch.Tensor]:
    """``{case: C' x D x h' x w'}``: every slab padded to ``crop`` and encoded on the encoder's own grid (unpooled).

    The padding takes the slab's background value (its minimum: the air around the head), not
    0, which after the z-score would be a mid-grey band beside the head.

    Pool with ``model.pool_embeddings``; computed once, the same embeddings serve several pools (benchmarks).
    """
    return {cid: model.encode_unpooled(torch.from_numpy(_pad(img, crop, img.min()))[None, None])[0]
            for cid, (img, _) in cases.items()}


def standardise_embeddings(feats: dict[str, torch.Tensor], fit_on: list[str]) -> dict[str, torch.Tensor]:
    """Every ``C x D x h x w`` embedding z-scored per channel with the mean and std of the ``fit_on`` cases.

    The statistics come from the training slabs only (no test information); 1e-6 is added to the
    std so that a channel constant over them stays finite. A linear probe does the same
    (``tests/test_real_mri.py``).
    """
    flat = torch.cat([feats[c].flatten(1) for c in fit_on], dim=1)
    mean, std = flat.mean(1), flat.std(1) + 1e-6
    return {c: (e - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1) for c, e in feats.items()}


def _pooled(model, unpooled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {cid: model.pool_embeddings(e[None])[0] for cid, e in unpooled.items()}


def _predict(decoder, feats: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    decoder.eval()
    with torch.inference_mode():
        logits = decoder(feats[None])
    d, h, w = shape
    return logits[0].argmax(0)[:d, :h, :w].numpy().astype(np.uint8)


def _score(preds: dict[str, np.ndarray], cases, spec, spacing) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sam3dlib.evaluation.metrics import aggregate, evaluate_case, per_case_frame

    results = {cid: evaluate_case(preds[cid], cases[cid][1], spec, spacing=spacing) for cid in preds}
    per_case = per_case_frame(results)
    return per_case, aggregate(per_case, spec)


def embedding_pool(settings: MRIDemoSettings, variant: EncoderVariant) -> int:
    """The pool factor that brings ``variant``'s embedding grid down to ``settings.max_grid`` (1: no pooling)."""
    from sam3dlib.modeling.encoders import encoder_input_size, get_encoder_spec

    side = encoder_input_size(variant.encoder, (settings.crop, settings.crop), variant.encoder_scale)[0]
    return max(1, side // get_encoder_spec(variant.encoder).stride // settings.max_grid)


def training_windows(depths: dict[str, int], depth: int) -> list[tuple[str, int]]:
    """Every ``(case, first slice)`` of a window of ``depth`` slices inside a training case.

    Sampled uniformly, so each slice position is equally likely; a case of exactly ``depth``
    slices gives one window (whole-slab training). ``depths``: ``{case: slices}``.

    Raises:
        ValueError: a case is thinner than ``depth``.
    """
    thin = {c: d for c, d in depths.items() if d < depth}
    if thin:
        raise ValueError(f"training cases thinner than the {depth}-slice window: {thin}")
    return [(c, z) for c in sorted(depths) for z in range(depths[c] - depth + 1)]


def train_and_test(settings: MRIDemoSettings, train_cases, test_cases, spec, pretrained: bool = True,
                   variant: EncoderVariant | None = None,
                   unpooled: dict[str, torch.Tensor] | None = None) -> EncoderRun:
    """Encode every slab once, train the decoder for ``settings.steps`` steps, score the test slabs.

    ``variant`` overrides ``settings.encoder`` / ``pretrained`` (encoder comparisons). ``unpooled``:
    the slabs' embeddings already computed by :func:`encode_cases` with the same encoder, weights
    and crop (then nothing is encoded here and ``encode_seconds`` is 0).
    """
    from sam3dlib.modeling.build import build_sam3d
    from sam3dlib.modeling.constants import RANDOM_WEIGHTS
    from sam3dlib.modeling.losses import sam3d_loss
    from sam3dlib.training.optim import poly_decay

    s = settings
    v = variant or EncoderVariant(s.encoder, pretrained)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        model = build_sam3d(spec.num_classes, image_size=s.crop, encoder=v.encoder, encoder_pool=embedding_pool(s, v),
                            encoder_weights=v.checkpoint if v.pretrained else RANDOM_WEIGHTS,
                            encoder_scale=v.encoder_scale)
    t0 = time.perf_counter()
    encode_seconds = 0.0
    if unpooled is None:
        unpooled = encode_cases(model, {**train_cases, **test_cases}, s.crop)
        encode_seconds = time.perf_counter() - t0
    feats = _pooled(model, unpooled)
    if s.standardise:
        feats = standardise_embeddings(feats, list(train_cases))
    train_feats = {c: feats[c] for c in train_cases}
    test_feats = {c: feats[c] for c in test_cases}
    labels = {cid: torch.from_numpy(_pad(lab, s.crop)) for cid, (_, lab) in train_cases.items()}
    decoder, loss_fn = model.decoder, sam3d_loss()
    opt = torch.optim.AdamW(decoder.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(s.seed)
    windows = training_windows({c: lab.shape[0] for c, lab in labels.items()}, s.slab)
    history, losses, train_seconds = [], [], 0.0
    for step in range(1, s.steps + 1):
        t1 = time.perf_counter()
        if s.poly_lr:
            for group in opt.param_groups:
                group["lr"] = poly_decay(s.lr, step - 1, s.steps)
        pick = [windows[int(i)] for i in torch.randint(len(windows), (s.batch_size,), generator=gen)]
        x = torch.stack([train_feats[c][:, z:z + s.slab] for c, z in pick])
        y = torch.stack([labels[c][z:z + s.slab] for c, z in pick])
        decoder.train()
        loss = loss_fn(decoder(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        train_seconds += time.perf_counter() - t1
        if step % s.eval_every == 0 or step == s.steps:
            preds = {c: _predict(decoder, test_feats[c], test_cases[c][0].shape) for c in test_cases}
            _, summary = _score(preds, test_cases, spec, spec.target_spacing)
            dsc = summary[(summary["region"] == "average") & (summary["metric"] == "DSC")]["mean"].iloc[0]
            history.append({"epoch": step, "train_loss": float(np.mean(losses)), "val_dice": float(dsc),
                            "lr": opt.param_groups[0]["lr"], "seconds": train_seconds})
            losses = []
    preds = {c: _predict(decoder, test_feats[c], test_cases[c][0].shape) for c in test_cases}
    per_case, summary = _score(preds, test_cases, spec, spec.target_spacing)
    return EncoderRun(v.label, v.has_weights, model.encoder_source, model.encoder_sha256, per_case, summary, history,
                      encode_seconds, train_seconds, preds)


def results_table(runs: list[EncoderRun]) -> pd.DataFrame:
    """One row per encoder: DSC and HD95 (mm) per class and their means."""
    rows = []
    for run in runs:
        row = {"encoder": run.label, "sha256": (run.encoder_sha256 or "random init")[:12]}
        for _, r in run.summary.iterrows():
            row[f"{r['metric']} {r['region']}"] = round(float(r["mean"]), 4 if r["metric"] == "DSC" else 2)
        row["encode s"] = round(run.encode_seconds, 1)
        row["train s"] = round(run.train_seconds, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def per_slab_table(runs: list[EncoderRun]) -> pd.DataFrame:
    """One row per encoder and test slab (case ids number the slabs inferior to superior): DSC, HD95 (mm)."""
    frames = [run.per_case.assign(encoder=run.label) for run in runs]
    wide = pd.concat(frames).pivot_table(index=["encoder", "case_id"], columns=["metric", "region"], values="value")
    wide.columns = [f"{m} {r}" for m, r in wide.columns]
    return wide.reset_index()


def _markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def load_task(settings: MRIDemoSettings):
    """``(train cases, test cases, spec, split note)`` of the MNI152 tissue task for ``settings``."""
    from sam3dlib.data.mni import mni152_slabs, mni152_spec, mni152_tissue, slab_arrays

    s = settings
    tissue = mni152_tissue(s.resolution)
    tissue = dataclasses.replace(tissue, image=_normalise(tissue.image))
    slabs = mni152_slabs(tissue.label, s.slab, s.gap, train_block=s.train_windows)
    train_slabs = [sl for sl in slabs if sl.role == "train"]
    test_slabs = [sl for sl in slabs if sl.role == "test"]
    if s.train_slabs and s.train_windows:  # the block's top train_slabs * slab slices
        block = train_slabs[0]
        train_slabs = [dataclasses.replace(block, z0=max(block.z0, block.z1 - s.train_slabs * s.slab))]
    elif s.train_slabs:
        train_slabs = train_slabs[-s.train_slabs:]
    test_slabs = test_slabs[:s.test_slabs] if s.test_slabs else test_slabs
    arrays = slab_arrays(tissue, train_slabs + test_slabs)
    train = {sl.case_id: arrays[sl.case_id] for sl in train_slabs}
    test = {sl.case_id: arrays[sl.case_id] for sl in test_slabs}
    what = (f"random windows of {s.slab} slices from z {train_slabs[0].z0}-{train_slabs[-1].z1 - 1}" if s.train_windows
            else f"{len(train)} slabs (z {train_slabs[0].z0}-{train_slabs[-1].z1 - 1})")
    note = (f"train: {what}; test: {len(test)} slabs "
            f"(z {test_slabs[0].z0}-{test_slabs[-1].z1 - 1}), superior to the training slices: different anatomy; "
            f"{s.resolution} mm voxels")
    return train, test, mni152_spec(s.resolution, (s.slab, s.crop, s.crop)), note


@dataclass
class Comparison:
    """Encoders compared on one task: the table, each run, the split, the test slabs and the spec."""

    table: pd.DataFrame
    runs: list[EncoderRun]
    note: str
    test: dict
    spec: object


def compare_encoders(variants: list[EncoderVariant], settings: MRIDemoSettings | None = None) -> Comparison:
    """Train and test every encoder variant on the same slabs with the same grid pool and budget."""
    s = settings or MRIDemoSettings()
    train, test, spec, note = load_task(s)
    runs = [train_and_test(s, train, test, spec, variant=v) for v in variants]
    return Comparison(results_table(runs), runs, note, test, spec)


def check_settings(settings: MRIDemoSettings) -> None:
    """ConfigError naming the first setting that cannot run (counts must be >= 1, lr > 0)."""
    from sam3dlib.utils.values import fail

    for name in ("resolution", "slab", "crop", "max_grid", "steps", "batch_size", "eval_every"):
        value = getattr(settings, name)
        if not (isinstance(value, int) and value >= 1):
            raise fail(f"demo setting {name}", value, "an integer >= 1")
    if settings.gap < 0:
        raise fail("demo setting gap", settings.gap, "an integer >= 0")
    if not settings.lr > 0:
        raise fail("demo setting lr", settings.lr, "a learning rate > 0")


def run_mri_demo(out: str | os.PathLike = "results/demo", compare_random: bool = False,
                 settings: MRIDemoSettings | None = None) -> dict:
    """Run the demo; write its table, overlays, curves and ``demo.json`` under ``out``; return the record."""
    from sam3dlib.study.report import save_figure
    from sam3dlib.study.report_figures import plot_overlays, plot_training_curves
    from sam3dlib.training.logging import write_log
    from sam3dlib.utils.fileio import atomic_write_csv

    s = settings or MRIDemoSettings()
    check_settings(s)
    variants = [EncoderVariant(s.encoder, True)] + ([EncoderVariant(s.encoder, False)] if compare_random else [])
    if compare_random and not variants[0].has_weights:
        raise ConfigError(f"compare_random compares pretrained weights with a random initialisation, but encoder "
                          f"{s.encoder} has no weights here (no checkpoint file): both runs would be random")
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, spec, split_note = load_task(s)
    runs = [train_and_test(s, train, test, spec, variant=v) for v in variants]
    table = results_table(runs)
    atomic_write_csv(out / "table.csv", table)
    atomic_write_csv(out / "per_slab.csv", per_slab_table(runs))
    atomic_write_text(out / "table.md", (
        f"# SAM3D on a real MRI: MNI152 2009a grey/white matter, {s.resolution} mm\n\n{split_note}.\n"
        f"Labels: the template's own tissue probability maps, thresholded (not manual segmentations). "
        f"HD95 in mm, the authors' evaluation scripts' convention: 0 when a class is absent from the prediction or the reference, "
        f"so read it beside the DSC. Means over the test slabs (per slab: per_slab.csv). {s.steps} decoder steps, batch "
        f"{s.batch_size}, AdamW lr {s.lr}{' with poly decay' if s.poly_lr else ''}.\n\n"
        + _markdown(table)))
    logs = []
    for run in runs:
        tag = "pretrained" if run.pretrained else "random"
        logs.append(write_log(out / f"log_{tag}.csv", run.history))
        cid = sorted(test)[len(test) // 2]
        fig = plot_overlays(test[cid][0], test[cid][1], run.predictions[cid], None, spec, case_id=f"{cid} ({run.title})")
        save_figure(fig, out / f"overlays_{tag}.png")
    fig = plot_training_curves(logs, labels=[r.title for r in runs])
    fig.suptitle(f"Training curves: SAM3D decoder on MNI152 2009a, {s.resolution} mm (test slabs superior to the "
                 f"training slices)\n{'; '.join(r.title for r in runs)}", fontsize=10)
    fig.axes[0].set_xlabel("step")
    fig.axes[1].set_xlabel("step")
    fig.axes[1].set_ylabel("test-slab DSC (monitor only, no selection)")
    save_figure(fig, out / "curves.png")
    seconds = time.perf_counter() - t0
    record = {
        "task": "MNI152 2009a tissue (background / grey matter / white matter)",
        "split": split_note,
        "mean_foreground_dsc": {r.label: round(r.mean_dsc, 4) for r in runs},
        "encoders": {r.label: {"source": r.encoder_source, "sha256": r.encoder_sha256 or "random init",
                               "encode_seconds": round(r.encode_seconds, 1),
                               "train_seconds": round(r.train_seconds, 1)} for r in runs},
        "seconds": round(seconds, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),  # all threads; wall time on a shared machine is longer
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "threads": torch.get_num_threads(),
        "settings": asdict(s),
    }
    atomic_write_json(out / "demo.json", record)
    record["table"] = table
    return record


__all__ = ["Comparison", "EncoderVariant", "MRIDemoSettings", "compare_encoders", "encode_cases", "load_task", "results_table", "run_mri_demo",
           "train_and_test"]
