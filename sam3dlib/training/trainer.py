"""The trainer: nnU-Net v1's schedule on SAM3D's decoder, as named steps.

:func:`train` runs a :class:`Trainer` through ``load_data`` -> ``open_run`` -> ``build`` ->
``prepare_features`` -> ``resume`` -> ``run_epoch`` (``train_epoch`` of :meth:`Trainer.step`,
``validate``, ``save``) per epoch -> ``finalize``. The features come from the run's
:class:`~sam3dlib.training.feature_source.FeatureSource` (online encoder or cached store).
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm  # text bars: no widgets (they need a widget-aware front end)

from sam3dlib.config import ExperimentConfig
from sam3dlib.data.io import DataFileError
from sam3dlib.modeling.factory import build_model, torch_dtype
from sam3dlib.modeling.run_checkpoint import BEST, LATEST, load_checkpoint, save_checkpoint, set_rng_state
from sam3dlib.training import provenance
from sam3dlib.training.data import TRAIN_STREAM, VAL_STREAM, epoch_loader
from sam3dlib.training.distributed import DistContext, init_distributed
from sam3dlib.training.feature_source import feature_source
from sam3dlib.training.logging import plot_curve, write_log
from sam3dlib.training.optim import make_optimizer, poly_lr, poly_step_lr
from sam3dlib.training.run_dir import (
    DATA_FINGERPRINT,
    DATASET_META,
    check_resume_data,
    check_run_dir,
    clear_run,
    data_fingerprint,
)
from sam3dlib.training.step import decoder_update, make_loss
from sam3dlib.training.step import validate as validation_dice
from sam3dlib.utils import folder_lock
from sam3dlib.utils.devices import resolve_device
from sam3dlib.utils.errors import ConfigError
from sam3dlib.utils.fileio import atomic_write_json, atomic_write_text, check_output_dir, remove_stale_temps
from sam3dlib.utils.finished import is_finished, mark_finished
from sam3dlib.utils.host_memory import reuse_freed_host_memory
from sam3dlib.utils.oom import is_oom_error, training_oom_error
from sam3dlib.utils.peak_memory import PeakMemory


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global RNGs (augmentation draws from them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """One training run of ``config`` on a prepared store, writing the run folder ``run``.

    Use :func:`train`; the steps are methods so that each does one job and can be tested
    or timed alone (the benchmark times :func:`~sam3dlib.training.step.decoder_update`,
    which :meth:`step` calls).

    Attributes set by the setup steps: ``store``, ``split``, ``train_ids``, ``val_ids``,
    ``missing`` (:meth:`load_data`); ``resuming`` (:meth:`open_run`); ``device``, ``model``,
    ``decoder``, ``net`` (the decoder or its DDP wrapper), ``optimizer``, ``loss_fn``,
    ``dtype`` (:meth:`build`). Progress: ``history``, ``start_epoch``, ``best``,
    ``best_epoch``, ``ema`` (the smoothed validation Dice that picks ``best.pt``),
    ``stopped_by_budget`` (``config.time_budget_s`` ended training before ``config.epochs``).
    Every log row records its optimizer ``steps``, ``step_seconds`` (their mean compute time) and
    ``peak_memory_gib`` on the device (:class:`~sam3dlib.utils.peak_memory.PeakMemory`).
    """

    def __init__(self, config: ExperimentConfig, data_dir: str | os.PathLike, run: str | os.PathLike,
                 ctx: DistContext, progress: bool = True) -> None:
        self.config, self.data_dir, self.run, self.ctx = config, Path(data_dir), Path(run), ctx
        self.progress = progress
        self.allow_data_change = False
        self.source = feature_source(config, data_dir)
        self.history: list[dict] = []
        self.start_epoch, self.best, self.best_epoch, self.ema = 0, -1.0, None, None
        self.stopped_by_budget, self.prepare_seconds = False, 0.0

    # ------------------------------------------------------------------ setup
    def load_data(self, allow_missing_cases: bool = False, allow_missing_labels: bool = False) -> None:
        """Open the store and the split; keep the labelled train and val cases.

        Raises:
            StoreError: ``data_dir`` is not a prepared store.
            ConfigError: the store is of another dataset (or a fold that does not exist).
            DataFileError: the store lacks split cases (real data, without ``allow_missing_cases``)
                or has no labelled training case.
            MissingLabelError: train/val cases lack labels (without ``allow_missing_labels``).
        """
        from sam3dlib.data.store import PreparedDataset

        config, data_dir = self.config, self.data_dir
        store = PreparedDataset(data_dir)
        if store.spec.name != config.dataset:
            raise ConfigError(f"{data_dir} holds {store.spec.name!r} data but {config.name} trains on {config.dataset!r}")
        split = store.split(config.protocol, fold=config.fold)
        missing = store.missing_split_cases(split)
        if missing and not allow_missing_cases:
            raise DataFileError(
                f"{data_dir}: the {config.protocol} split of {store.spec.name} lists {len(missing)} case(s) that the "
                f"store lacks ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); results would not be "
                "comparable to the paper. Prepare the missing cases, or pass --allow-missing-cases "
                "(allow_missing_cases=True) to train on the cases present"
            )
        self.store, self.split, self.missing = store, split, missing
        self.train_ids, no_label = store.labelled_cases(list(split.train), "train", allow_missing_labels)
        self.val_ids, no_label_val = store.labelled_cases(list(split.val), "val", allow_missing_labels)
        self.dropped_unlabelled = {"train": no_label, "val": no_label_val}
        if not self.train_ids:
            raise DataFileError(f"{data_dir}: no labelled training case of the {config.protocol} split is in the store")

    def open_run(self, resume: bool, force: bool) -> bool:
        """Check the outputs, clear the run (``force``) or check it may be resumed.

        Returns:
            False when ``resume`` meets a finished run (nothing left to do), else True.
        """
        check_output_dir(self.run, "run folder (--out)")
        self.source.check_output()
        self.hold_run()
        if force:
            if self.ctx.is_main:
                clear_run(self.run)
            self.ctx.barrier()
            resume = False
        self.resuming = check_run_dir(self.run, self.config, resume)
        self.data_changes = []
        if self.resuming and not is_finished(self.run):
            self.data_changes = check_resume_data(self.run, self.store, self.case_ids, self.allow_data_change)
        return not (resume and is_finished(self.run))

    @property
    def case_ids(self) -> list[str]:
        """The cases this run trains and validates on (their data is fingerprinted)."""
        return [*self.train_ids, *self.val_ids]

    def hold_run(self) -> None:
        """Own the run folder for this process's life (rank 0 takes it, every rank learns whether it did).

        Raises:
            FolderInUseError: another live process (a training, an evaluation) owns the folder;
                ``force`` cannot take it from a live owner.
        """
        refusal = None
        if self.ctx.is_main:
            try:
                folder_lock.acquire(self.run, "run folder (--out)")
                self.held = True
            except folder_lock.FolderInUseError as exc:
                refusal = str(exc)
        refusal = self.ctx.broadcast_object(refusal)
        if refusal is not None:
            raise folder_lock.FolderInUseError(refusal)

    def release_run(self) -> None:
        """Give the run folder back (the end of :func:`train`, also after an error)."""
        if getattr(self, "held", False):
            folder_lock.release(self.run)
            self.held = False

    def build(self) -> None:
        """Device, model, run files (config, dataset meta, provenance), DDP, optimizer, loss."""
        config, ctx = self.config, self.ctx
        self.device = resolve_device(config.device, ctx.local_rank if ctx.initialized else None)
        reuse_freed_host_memory(self.device.type)
        self.pin = self.device.type == "cuda"  # page-locked batches make the non-blocking copies asynchronous
        self.model = build_model(config, self.store.spec).to(self.device)
        self.peak_memory = PeakMemory(self.device)
        if ctx.is_main:
            self._write_run_files()
            if self.progress and hasattr(self.model, "grid_description"):  # a SAM3D model (not a baseline)
                print(self.model.grid_description(), flush=True)
        self.decoder = self.model.decoder
        self.net: torch.nn.Module = self.decoder
        if ctx.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.decoder, device_ids=ids)
        self.optimizer = make_optimizer(config, self.decoder.parameters())
        self.loss_fn = make_loss(config)
        self.dtype = torch_dtype(config.decoder_dtype)

    def _write_run_files(self) -> None:
        run = self.run
        run.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run)
        remove_stale_temps(run / "checkpoints")
        atomic_write_text(run / "config.json", self.config.to_json() + "\n")
        if not (run / DATASET_META).is_file() or not self.resuming:  # what earlier epochs used is kept
            atomic_write_json(run / DATASET_META, self.store.meta)
        if not (run / DATA_FINGERPRINT).is_file() or not self.resuming:
            atomic_write_json(run / DATA_FINGERPRINT, data_fingerprint(self.store, self.case_ids))
        prov = provenance.collect(self.config, self.model, self.device, self.store, self.split, self.ctx.world_size)
        prov["missing_split_cases"] = self.missing
        prov["dropped_unlabelled_cases"] = self.dropped_unlabelled
        if self.data_changes:
            prov["resumed_on_changed_data"] = self.data_changes
        atomic_write_json(run / "provenance.json", prov)

    def prepare_features(self) -> None:
        """The feature source's one-off work (cached mode: encode the train and val cases)."""
        t0 = time.perf_counter()
        self.source.prepare(self.model, self.store, [*self.train_ids, *self.val_ids], self.device, self.ctx,
                            progress=self.progress)
        self.prepare_seconds = time.perf_counter() - t0

    def resume(self) -> None:
        """Seed this rank; continue from ``checkpoints/latest.pt`` when resuming."""
        seed_everything(self.config.seed + self.ctx.rank)
        if not self.resuming:
            return
        ck = load_checkpoint(self.run / "checkpoints" / LATEST, map_location=self.device)
        self.decoder.load_state_dict(ck["decoder"])
        self.optimizer.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        self.start_epoch, self.history, self.ema = int(ck["epoch"]), list(ck["history"]), ck["ema"]
        self.best, self.best_epoch = float(ck["best_metric"]), ck["best_epoch"]

    # ------------------------------------------------------------------ epochs
    def fit(self, max_epochs: int | None = None) -> None:
        """Epochs from the start (or resumed) epoch to ``config.epochs``, at most ``max_epochs`` now."""
        end = self.config.epochs if max_epochs is None else min(self.config.epochs, self.start_epoch + max_epochs)
        for epoch in range(self.start_epoch, end):
            self.run_epoch(epoch)
            if self.stopped_by_budget:
                break

    def trained_seconds(self) -> float:
        """Seconds of training (steps, validation) so far, over every session of this run."""
        done = sum(float(r.get("seconds") or 0.0) for r in self.history)
        return done + (time.perf_counter() - self._epoch_t0 if getattr(self, "_epoch_t0", None) else 0.0)

    def budget_spent(self, seconds: float | None = None) -> bool:
        """Whether ``config.time_budget_s`` has passed after ``seconds`` of training (None: now;
        the same answer on every rank)."""
        budget = self.config.time_budget_s
        spent = budget is not None and (self.trained_seconds() if seconds is None else seconds) >= budget
        if self.ctx.world_size > 1:
            flag = torch.tensor([float(spent)], device=self.device)
            spent = bool(self.ctx.all_reduce_sum(flag).item() > 0)
        return spent

    def run_epoch(self, epoch: int) -> dict:
        """Train, validate (when due), pick the best, log and checkpoint one epoch; returns its log row."""
        t0 = self._epoch_t0 = time.perf_counter()
        lr = poly_lr(self.config, epoch, self.trained_seconds())
        self._set_lr(lr)
        self.peak_memory.start()
        loss = self.train_epoch(epoch)
        peak = self.peak_memory.stop()
        self.stopped_by_budget = self.config.time_budget_s is not None and self.budget_spent()
        val = self.validate(epoch, force=self.stopped_by_budget)
        if val is not None:
            self.ema = val if self.ema is None else self.config.ema_alpha * self.ema + (1 - self.config.ema_alpha) * val
        metric = self.ema if self.ema is not None else (-loss if not self.val_ids else None)
        is_best = metric is not None and (self.best_epoch is None or metric > self.best)
        if is_best:
            self.best, self.best_epoch = float(metric), epoch + 1
        row = {"epoch": epoch + 1, "train_loss": loss, "val_dice": val,
               "val_dice_ema": self.ema if val is not None else None, "lr": lr, "seconds": time.perf_counter() - t0,
               "steps": self._steps, "step_seconds": self._step_seconds / max(self._steps, 1),
               "peak_memory_gib": None if peak is None else peak / 2**30}
        self._epoch_t0 = None
        self.history.append(row)
        if self.ctx.is_main:
            self.save(is_best)
            if self.progress:
                tqdm.write(self.epoch_line(row))
        self.ctx.barrier()
        return row

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def epoch_line(self, row: dict) -> str:
        """One progress line per epoch: ``<name> seed <k>: epoch e/E, loss L[, val Dice D], ETA ...``
        (the ETA extrapolates the mean epoch time since this process started; with
        ``time_budget_s`` it is at most the budget left)."""
        done = [r["seconds"] for r in self.history[self.start_epoch:]]
        left = (self.config.epochs - row["epoch"]) * (sum(done) / max(len(done), 1))
        if self.config.time_budget_s is not None:
            left = max(0.0, min(left, self.config.time_budget_s - self.trained_seconds()))
        val = f", val Dice {row['val_dice']:.3f}" if row.get("val_dice") is not None else ""
        eta = f"{left / 60:.1f} min" if left >= 90 else f"{left:.0f} s"
        return (f"{self.config.name} seed {self.config.seed}: epoch {row['epoch']}/{self.config.epochs}, "
                f"loss {row['train_loss']:.4f}{val}, ETA {eta}")

    def _loader(self, case_ids: list[str], iterations: int, epoch: int, stream: int, augment: bool):
        return epoch_loader(self.config, self.source, self.store, case_ids, iterations, epoch, stream, self.ctx,
                            augment=augment, pin_memory=self.pin)

    def train_epoch(self, epoch: int) -> float:
        """``iterations_per_epoch`` steps (fewer when ``config.time_budget_s`` runs out); the mean
        loss over steps and ranks. Sets ``_steps`` and ``_step_seconds`` (their summed compute time).

        Raises:
            TrainingOOMError: out of memory in a step; the message names the settings to lower.
        """
        self.model.train()
        loader = self._loader(self.train_ids, self.config.iterations_per_epoch, epoch, TRAIN_STREAM, True)
        total, n, self._step_seconds = 0.0, 0, 0.0
        budget = self.config.time_budget_s is not None
        with tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{self.config.epochs}", leave=False,
                  disable=not (self.progress and self.ctx.is_main)) as bar:
            for i, batch in enumerate(loader):
                seconds = self.trained_seconds() if budget else 0.0
                if budget and self.budget_spent(seconds):
                    break
                if self.config.poly_per_step:
                    self._set_lr(poly_step_lr(self.config, epoch * self.config.iterations_per_epoch + i, seconds))
                t0 = time.perf_counter()
                try:
                    loss = self.step(batch)
                except (RuntimeError, MemoryError) as exc:
                    if is_oom_error(exc):
                        raise training_oom_error(exc, self.config) from exc
                    raise
                total += float(loss.detach())  # waits for the device: the step's time is complete
                self._step_seconds += time.perf_counter() - t0
                n += 1
                bar.update(1)
                bar.set_postfix(loss=f"{total / n:.4f}")
        self._steps = n
        mean = torch.tensor([total / max(n, 1)], dtype=torch.float64, device=self.device)
        return float(self.ctx.all_reduce_sum(mean).item()) / self.ctx.world_size

    def step(self, batch: dict) -> torch.Tensor:
        """One optimizer step on a batch: features from the source, then :func:`decoder_update`."""
        feats = self.source.features(self.model, batch, self.device)
        target = batch["label"].to(self.device, non_blocking=True)
        return decoder_update(self.net, feats, target, self.optimizer, self.loss_fn, self.config.grad_clip, self.dtype)

    def validate(self, epoch: int, force: bool = False) -> float | None:
        """The online validation Dice when due (every ``val_every`` epochs and the last, or ``force``:
        the last epoch of a time budget), else None."""
        config = self.config
        due = force or (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs
        if not self.val_ids or not due:
            return None
        self.model.eval()
        loader = self._loader(self.val_ids, config.val_iterations, epoch, VAL_STREAM, False)
        batches = ((self.source.features(self.model, b, self.device), b["label"]) for b in loader)
        val, _ = validation_dice(self.decoder, batches, dict(self.store.spec.regions), self.device, config.decoder_dtype,
                          self.ctx)
        return val

    def save(self, is_best: bool) -> None:
        """Checkpoints (latest; best when ``is_best``), ``log.csv`` and the training curve (rank 0)."""
        state = dict(epoch=self.history[-1]["epoch"], decoder=self.decoder.state_dict(),
                     optimizer=self.optimizer.state_dict(), best_metric=self.best, best_epoch=self.best_epoch,
                     ema=self.ema, history=self.history, config=self.config.to_dict(), protocol=self.config.protocol)
        ckpt_dir = self.run / "checkpoints"
        if is_best:
            save_checkpoint(ckpt_dir / BEST, **state)
        save_checkpoint(ckpt_dir / LATEST, **state)
        write_log(self.run / "log.csv", self.history)
        plot_curve(self.run / "training_curve.png", self.history, self.curve_title())

    def curve_title(self) -> str:
        config = self.config
        enc = (f"{config.model}, trained from scratch (no encoder)" if self.model.encoder is None
               else f"RANDOM {config.encoder} encoder (not SAM weights)" if self.model.random_encoder
               else f"SAM {config.encoder}")
        return f"{config.name} [{config.profile}, {self.source.mode}] - {enc} - {self.store.data_label}"

    # ------------------------------------------------------------------ end
    def finalize(self) -> None:
        """Compare the DDP replicas; after the last epoch write the run's finished marker (once)."""
        ctx, config = self.ctx, self.config
        if ctx.world_size > 1:
            self._check_replicas()
        done = self.history and (self.history[-1]["epoch"] == config.epochs or self.stopped_by_budget)
        if ctx.is_main and done and not is_finished(self.run):
            mark_finished(self.run, {"epochs": config.epochs, "seed": config.seed,
                                     "decoder_sha256": provenance.state_digest(self.decoder),
                                     "checkpoint": str(Path("checkpoints") / LATEST), **self.cost_record()})

    def cost_record(self) -> dict:
        """What the run cost: model, trainable parameters, epochs and steps done, training seconds (steps
        and validation, over every session), seconds per step, peak device memory, and why it stopped."""
        steps = sum(int(r.get("steps") or 0) for r in self.history)
        step_time = sum(float(r.get("step_seconds") or 0.0) * int(r.get("steps") or 0) for r in self.history)
        peaks = [float(r["peak_memory_gib"]) for r in self.history if r.get("peak_memory_gib") is not None]
        return {"model": self.config.model, "trainable_parameters": int(self.model.trainable_parameters()),
                "epochs_done": int(self.history[-1]["epoch"]) if self.history else 0, "steps": steps,
                "train_seconds": round(self.trained_seconds(), 3), "feature_seconds": round(self.prepare_seconds, 3),
                "seconds_per_step": step_time / steps if steps else None,
                "peak_memory_gib": max(peaks) if peaks else None, "memory_measure": self.peak_memory.measure,
                "device": provenance.device_description(self.device),
                "stopped_by": "time_budget_s" if self.stopped_by_budget else "epochs",
                "time_budget_s": self.config.time_budget_s}

    def _check_replicas(self) -> None:
        """Every rank's decoder must be identical after DDP training; rank 0 records the hashes."""
        import torch.distributed as dist

        ctx = self.ctx
        hashes: list[str | None] = [None] * ctx.world_size
        dist.all_gather_object(hashes, provenance.state_digest(self.decoder))
        if ctx.is_main:
            atomic_write_json(self.run / "ddp_replicas.json",
                              {"world_size": ctx.world_size, "decoder_sha256_per_rank": hashes})
        if len(set(hashes)) != 1:
            raise RuntimeError(f"DDP replicas diverged: decoder hashes per rank {hashes}")


def train(config: ExperimentConfig, data_dir: str | os.PathLike, out_dir: str | os.PathLike, resume: bool = False,
          progress: bool = True, max_epochs: int | None = None, force: bool = False,
          allow_missing_cases: bool = False, allow_missing_labels: bool = False,
          allow_data_change: bool = False) -> Path:
    """Train SAM3D's decoder as the authors' code does; write the run directory.

    Args:
        config: the experiment (see :func:`sam3dlib.study.registry.get_config`).
        data_dir: a prepared store (``sam3d prepare`` output) of ``config.dataset``.
        out_dir: the run directory (created).
        resume: continue from ``checkpoints/latest.pt`` if present.
        progress: tqdm progress bars.
        max_epochs: stop after this many epochs in this call (e.g. to fit a job's time limit);
            the schedule still follows ``config.epochs`` and ``resume=True`` continues.
        force: delete a run already in ``out_dir`` (finished or not) and train from scratch.
            Without it a finished run is never overwritten.
        allow_missing_cases: train although the store (real data, not a phantom) lacks cases
            that the shipped split lists; they are recorded in ``provenance.json``.
        allow_missing_labels: leave out train/val cases whose label is missing (recorded in
            ``provenance.json`` ``dropped_unlabelled_cases``); without it they are an error.
        allow_data_change: resume although the store's data changed since the run started
            (recorded in ``provenance.json``; the run's ``dataset_meta.json`` is kept as it was).

    Returns:
        The run directory.

    Raises:
        RunExistsError: ``out_dir`` holds a finished run and ``force`` is False, holds an
            unfinished one and neither ``resume`` nor ``force`` is set, the config differs, or the
            data changed since the run started (without ``allow_data_change``).
        FolderInUseError: another live process owns ``out_dir``.
        ValueError: the store is of another dataset, has no labelled training case, or lacks
            split cases (real data, without ``allow_missing_cases``).
        OutputError: ``out_dir`` cannot be written (a file in the way, read-only, disk full).
        TrainingOOMError: out of memory; the message names the settings to lower.
    """
    ctx = init_distributed(config.device)
    trainer = None
    try:
        trainer = Trainer(config, data_dir, out_dir, ctx, progress)
        trainer.allow_data_change = allow_data_change
        trainer.load_data(allow_missing_cases, allow_missing_labels)
        if not trainer.open_run(resume, force):
            return trainer.run  # nothing left to do; a finished run is never touched again
        trainer.build()
        trainer.prepare_features()
        trainer.resume()
        trainer.fit(max_epochs)
        trainer.finalize()
        return trainer.run
    finally:
        if trainer is not None:
            trainer.release_run()
        ctx.close()
