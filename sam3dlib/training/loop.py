"""The training loop: nnU-Net v1's schedule on SAM3D's decoder, in online or cached mode."""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sam3dlib.training.feature_cache import FeatureCache, cache_settings
from sam3dlib.config import ExperimentConfig
from sam3dlib.utils.fileio import atomic_write_json, atomic_write_text, check_output_dir, remove_stale_temps
from sam3dlib.utils.host_memory import reuse_freed_host_memory
from sam3dlib.modeling.losses import sam3d_loss
from sam3dlib.modeling.sam3d import SAM3D, autocast_context
from sam3dlib.utils.oom import is_oom_error, training_oom_error
from sam3dlib.training import provenance
from sam3dlib.modeling.run_checkpoint import BEST, LATEST, load_checkpoint, save_checkpoint, set_rng_state
from sam3dlib.training.data import TRAIN_STREAM, VAL_STREAM, epoch_loader
from sam3dlib.training.distributed import DistContext, init_distributed
from sam3dlib.utils.devices import resolve_device
from sam3dlib.modeling.factory import build_model, torch_dtype
from sam3dlib.training.optim import make_optimizer, poly_lr
from sam3dlib.training.logging import plot_curve, write_log

#: settings that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = ("device", "num_workers", "cache_dir", "mirror_tta", "sw_overlap", "encoder_chunk_size")


#: written when the last epoch of ``config.epochs`` is done; its presence marks a finished run
FINISHED = "finished.json"
#: files and folders of a run that ``force=True`` deletes before starting over
RUN_OUTPUTS = ("checkpoints", "predictions", "config.json", "provenance.json", "dataset_meta.json", "log.csv",
               "training_curve.png", "per_case.csv", "summary.csv", "results.json", "ddp_replicas.json", FINISHED)


class RunExistsError(FileExistsError):
    """The output folder already holds a (different, unfinished or finished) training run."""


def is_finished(run: str | os.PathLike) -> bool:
    """Whether ``run`` holds a training run that completed all its epochs."""
    return (Path(run) / FINISHED).is_file()


def clear_run(run: str | os.PathLike) -> list[Path]:
    """Delete the files of a training run in ``run`` (only :data:`RUN_OUTPUTS`; other files stay)."""
    import shutil

    removed = []
    for name in RUN_OUTPUTS:
        p = Path(run) / name
        if p.is_dir():
            shutil.rmtree(p)
            removed.append(p)
        elif p.exists():
            p.unlink()
            removed.append(p)
    return removed


def missing_split_cases(store, split) -> list[str]:
    """Cases the full shipped split lists for train or test that the store lacks (none for a user
    dataset: its folds were made from the cases it has)."""
    from sam3dlib.data.splits import get_split

    if store.is_user_dataset:
        return []

    full = get_split(store.spec.name, split.protocol, test_set=split.test_set)
    have = set(store.case_ids)
    return sorted((set(full.train) | set(full.test)) - have)


def default_cache_dir(config: ExperimentConfig, data_dir: str | os.PathLike) -> Path:
    return Path(config.cache_dir) if config.cache_dir else Path(data_dir) / "feature_cache"


def _check_run_dir(run: Path, config: ExperimentConfig, resume: bool) -> bool:
    """Whether a checkpoint to resume from exists; raises when the folder holds a conflicting run."""
    latest = run / "checkpoints" / LATEST
    if is_finished(run) and not resume:
        raise RunExistsError(
            f"{run} already holds a finished training run ({run / FINISHED}); it is not overwritten: pass "
            "--force (force=True) to delete it and train again, or choose another --out "
            "(--resume only continues unfinished runs)"
        )
    if latest.is_file() and not resume:
        raise RunExistsError(
            f"{run} already holds an unfinished training run ({latest}); pass --resume (resume=True) to "
            "continue it, --force (force=True) to start over, or choose another --out"
        )
    if resume and (run / "config.json").is_file():
        old = ExperimentConfig.load(run / "config.json").to_dict()
        new = config.to_dict()
        diff = [k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k]]
        if diff:
            changes = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
            raise RunExistsError(f"cannot resume {run}: the config differs from the stored one ({changes})")
    return resume and latest.is_file()


def _features(model: SAM3D, batch: dict, device: torch.device) -> torch.Tensor:
    if "features" in batch:
        return batch["features"].to(device, non_blocking=True)
    return model.encode(batch["image"].to(device, non_blocking=True))


def _train_step(model, net, batch, optimizer, loss_fn, config, device, dtype) -> torch.Tensor:
    feats = _features(model, batch, device)
    target = batch["label"].to(device, non_blocking=True)
    with autocast_context(device.type, dtype):
        out = net(feats)
    out = [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()
    loss = loss_fn(out, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), config.grad_clip)
    optimizer.step()
    return loss


def _train_epoch(model, net, loader, optimizer, loss_fn, config, device, bar) -> float:
    model.train()
    total, n = 0.0, 0
    dtype = torch_dtype(config.decoder_dtype)
    for batch in loader:
        try:
            loss = _train_step(model, net, batch, optimizer, loss_fn, config, device, dtype)
        except (RuntimeError, MemoryError) as exc:
            if is_oom_error(exc):
                raise training_oom_error(exc, config) from exc
            raise
        total += float(loss.detach())
        n += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total / n:.4f}")
    return total / max(n, 1)


@torch.no_grad()
def validate(model: SAM3D, loader, regions: dict[str, tuple[int, ...]], device: torch.device,
             decoder_dtype: str = "float32", ctx: DistContext | None = None) -> tuple[float, dict[str, float]]:
    """nnU-Net's online "global foreground Dice" on un-augmented patches.

    TP/FP/FN are summed over all batches (and ranks) per scored region, Dice is computed per
    region (regions with no voxel in prediction and target are left out), then averaged.

    Returns:
        (mean Dice, {region: Dice}).
    """
    model.eval()
    stats = torch.zeros(3, len(regions), dtype=torch.float64)
    for batch in loader:
        feats = _features(model, batch, device)
        with autocast_context(device.type, torch_dtype(decoder_dtype)):
            logits = model.decoder(feats)
        pred = logits.argmax(1).cpu()
        target = batch["label"]
        for r, labels in enumerate(regions.values()):
            lab = torch.tensor(labels)
            p, g = torch.isin(pred, lab), torch.isin(target, lab)
            stats[0, r] += (p & g).sum()
            stats[1, r] += (p & ~g).sum()
            stats[2, r] += (~p & g).sum()
    if ctx is not None:
        stats = ctx.all_reduce_sum(stats.to(device)).cpu()
    tp, fp, fn = stats
    denom = 2 * tp + fp + fn
    dice = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))
    per_region = {name: float(d) for name, d in zip(regions, dice)}
    valid = dice[~torch.isnan(dice)]
    return (float(valid.mean()) if len(valid) else 0.0), per_region


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _curve_title(config: ExperimentConfig, model: SAM3D, phantom: bool) -> str:
    enc = f"RANDOM {config.encoder} encoder (not SAM weights)" if model.random_encoder else f"SAM {config.encoder}"
    data = f"PHANTOM {config.dataset} data" if phantom else config.dataset
    return f"{config.name} [{config.profile}, {config.encoder_mode}] - {enc} - {data}"


def train(config: ExperimentConfig, data_dir: str | os.PathLike, out_dir: str | os.PathLike, resume: bool = False,
          progress: bool = True, max_epochs: int | None = None, force: bool = False,
          allow_missing_cases: bool = False) -> Path:
    """Train SAM3D's decoder as the paper's code does; write the run directory.

    Args:
        config: the experiment (see :func:`sam3dlib.config.get_config`).
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

    Returns:
        The run directory.

    Raises:
        RunExistsError: ``out_dir`` holds a finished run and ``force`` is False, holds an
            unfinished one and neither ``resume`` nor ``force`` is set, or the config differs.
        ValueError: the store is of another dataset, has no labelled training case, or lacks
            split cases (real data, without ``allow_missing_cases``).
        OutputError: ``out_dir`` cannot be written (a file in the way, read-only, disk full).
        TrainingOOMError: out of memory; the message names the settings to lower.
    """
    ctx = init_distributed(config.device)
    try:
        return _train(config, Path(data_dir), Path(out_dir), resume, progress, max_epochs, ctx, force,
                      allow_missing_cases)
    finally:
        ctx.close()


def _train(config: ExperimentConfig, data_dir: Path, run: Path, resume: bool, progress: bool,
           max_epochs: int | None, ctx: DistContext, force: bool = False, allow_missing_cases: bool = False) -> Path:
    from sam3dlib.data.store import PreparedDataset

    store = PreparedDataset(data_dir)
    if store.spec.name != config.dataset:
        raise ValueError(f"{data_dir} holds {store.spec.name!r} data but {config.name} trains on {config.dataset!r}")
    split = store.split(config.protocol, fold=config.fold)
    phantom = store.is_phantom
    missing = [] if phantom else missing_split_cases(store, split)
    if missing and not allow_missing_cases:
        raise ValueError(
            f"{data_dir}: the {config.protocol} split of {store.spec.name} lists {len(missing)} case(s) that the "
            f"store lacks ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); results would not be "
            "comparable to the paper. Prepare the missing cases, or pass --allow-missing-cases "
            "(allow_missing_cases=True) to train on the cases present"
        )
    train_ids = [c for c in split.train if store.label(c) is not None]
    val_ids = [c for c in split.val if store.label(c) is not None]
    if not train_ids:
        raise ValueError(f"{data_dir}: no labelled training case of the {config.protocol} split is in the store")
    check_output_dir(run, "run folder (--out)")
    if config.encoder_mode == "cached":
        check_output_dir(default_cache_dir(config, data_dir), "feature cache folder (cache_dir)")
    if force:
        if ctx.is_main:
            clear_run(run)
        ctx.barrier()
        resume = False
    resuming = _check_run_dir(run, config, resume)
    if resume and is_finished(run):
        return run  # nothing left to do; a finished run is never touched again
    device = resolve_device(config.device, ctx.local_rank if ctx.initialized else None)
    reuse_freed_host_memory(device.type)
    pin = device.type == "cuda"  # page-locked batches make the non-blocking copies asynchronous
    model = build_model(config, store.spec).to(device)
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run)
        remove_stale_temps(run / "checkpoints")
        atomic_write_text(run / "config.json", config.to_json() + "\n")
        atomic_write_json(run / "dataset_meta.json", store.meta)
        prov = provenance.collect(config, model, device, store, split, ctx.world_size)
        prov["missing_split_cases"] = missing
        atomic_write_text(run / "provenance.json", provenance.dumps(prov) + "\n")
    decoder = model.decoder
    net: torch.nn.Module = decoder
    if ctx.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(decoder, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(config, decoder.parameters())
    loss_fn = sam3d_loss(batch_dice=config.batch_dice, squared=config.squared_dice)

    cache = None
    if config.encoder_mode == "cached":
        cache = FeatureCache(default_cache_dir(config, data_dir), cache_settings(config, model))
        try:
            cache.build(store, sorted(set(train_ids) | set(val_ids)), model, device, ctx.rank, ctx.world_size,
                        progress=progress and ctx.is_main)
        except (RuntimeError, MemoryError) as exc:
            if is_oom_error(exc):
                raise training_oom_error(exc, config, "feature-cache encoding") from exc
            raise
        ctx.barrier()

    history: list[dict] = []
    start, best, best_epoch, ema = 0, -1.0, None, None
    ckpt_dir = run / "checkpoints"
    _seed_everything(config.seed + ctx.rank)
    if resuming:
        ck = load_checkpoint(ckpt_dir / LATEST, map_location=device)
        decoder.load_state_dict(ck["decoder"])
        optimizer.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        start, history, ema = int(ck["epoch"]), list(ck["history"]), ck["ema"]
        best, best_epoch = float(ck["best_metric"]), ck["best_epoch"]

    regions = dict(store.spec.regions)
    done_now = 0
    for epoch in range(start, config.epochs):
        if max_epochs is not None and done_now >= max_epochs:
            break
        t0 = time.perf_counter()
        lr = poly_lr(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loader = epoch_loader(config, store, cache, train_ids, config.iterations_per_epoch, epoch, TRAIN_STREAM,
                              ctx, augment=True, pin_memory=pin)
        with tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                  disable=not (progress and ctx.is_main)) as bar:
            loss = _train_epoch(model, net, loader, optimizer, loss_fn, config, device, bar)
        loss = float(ctx.all_reduce_sum(torch.tensor([loss], dtype=torch.float64, device=device)).item()) / ctx.world_size
        val = None
        if val_ids and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            vloader = epoch_loader(config, store, cache, val_ids, config.val_iterations, epoch, VAL_STREAM, ctx,
                                   augment=False, pin_memory=pin)
            val, _ = validate(model, vloader, regions, device, config.decoder_dtype, ctx)
            ema = val if ema is None else config.ema_alpha * ema + (1 - config.ema_alpha) * val
        metric = ema if ema is not None else (-loss if not val_ids else None)
        is_best = metric is not None and (best_epoch is None or metric > best)
        if is_best:
            best, best_epoch = float(metric), epoch + 1
        history.append({"epoch": epoch + 1, "train_loss": loss, "val_dice": val,
                        "val_dice_ema": ema if val is not None else None, "lr": lr,
                        "seconds": time.perf_counter() - t0})
        if ctx.is_main:
            state = dict(epoch=epoch + 1, decoder=decoder.state_dict(), optimizer=optimizer.state_dict(),
                         best_metric=best, best_epoch=best_epoch, ema=ema, history=history,
                         config=config.to_dict(), protocol=config.protocol)
            if is_best:
                save_checkpoint(ckpt_dir / BEST, **state)
            save_checkpoint(ckpt_dir / LATEST, **state)
            write_log(run / "log.csv", history)
            plot_curve(run / "training_curve.png", history, _curve_title(config, model, phantom))
        ctx.barrier()
        done_now += 1
    if ctx.world_size > 1:
        _check_replicas(decoder, ctx, run)
    if ctx.is_main and history and history[-1]["epoch"] == config.epochs and not is_finished(run):
        atomic_write_json(run / FINISHED, {"epochs": config.epochs, "seed": config.seed,
                                           "decoder_sha256": provenance.state_digest(decoder),
                                           "checkpoint": str(Path("checkpoints") / LATEST)})
    return run


def _check_replicas(decoder: torch.nn.Module, ctx: DistContext, run: Path) -> None:
    """Every rank's decoder must be identical after DDP training; rank 0 records the hashes."""
    import torch.distributed as dist

    hashes: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(hashes, provenance.state_digest(decoder))
    if ctx.is_main:
        atomic_write_json(run / "ddp_replicas.json", {"world_size": ctx.world_size, "decoder_sha256_per_rank": hashes})
    if len(set(hashes)) != 1:
        raise RuntimeError(f"DDP replicas diverged: decoder hashes per rank {hashes}")
