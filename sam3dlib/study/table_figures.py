"""The figures of a table run, drawn from its files and saved under ``out_dir/figures``.

``dsc_bars`` (this run vs the paper per region), ``per_case_dsc`` (per-case DSC distributions
over seeds and classes, seaborn box + strip plots), ``params_vs_dsc``, ``training_curves`` and
``overlays`` (image / ground truth / prediction of one predicted test case).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sam3dlib.data.specs import get_spec
from sam3dlib.data.store import PreparedDataset
from sam3dlib.modeling.models import MODELS
from sam3dlib.study import report
from sam3dlib.study import report_figures as rf
from sam3dlib.study.registry import experiments
from sam3dlib.study.table_result import TableResult, store_root


def _read_prediction(pred_path: Path, store: PreparedDataset, case: str):
    import nibabel as nib

    from sam3dlib.data.preprocess import TRANSPOSE, restore_label

    props = store.properties(case)
    t = list(props.get("transpose", TRANSPOSE))
    pred = np.transpose(np.asanyarray(nib.load(pred_path).dataobj), t)
    gt = np.transpose(restore_label(np.asarray(store.label(case)), props), t)
    image = np.zeros(gt.shape, np.float32)
    files = props.get("image_files") or []
    if files and Path(files[0]).is_file():
        raw = np.asanyarray(nib.load(files[0]).dataobj).astype(np.float32)
        raw = raw[..., 0] if raw.ndim == 4 else raw
        if raw.shape == tuple(int(s) for s in props["original_shape"]):
            image = np.transpose(raw, t)
    return image, gt, pred


def overlay_arrays(run_dir: Path, store_root: Path, case_id: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    """Image, ground truth and prediction of a predicted test case on the original grid (z, y, x).

    Args:
        run_dir: an experiment's run folder (``predictions/<case>.nii.gz``).
        store_root: the prepared store the run used (``<data_dir>/<dataset>``).
        case_id: the case; None = the first predicted case.

    Returns:
        ``(image, gt, pred, case_id)`` or None when no prediction matches. The image is read
        from the case's raw file when it still exists (zeros otherwise).
    """
    preds = sorted((Path(run_dir) / "predictions").glob("*.nii.gz"))
    store = PreparedDataset(store_root) if preds else None
    for pred_path in preds:
        case = pred_path.name[: -len(".nii.gz")]
        if (case_id is not None and case != case_id) or case not in store.case_ids or store.label(case) is None:
            continue
        image, gt, pred = _read_prediction(pred_path, store, case)
        if pred.shape == gt.shape:
            return image, gt, pred, case
    return None


def draw_figures(result: TableResult) -> dict[str, Path]:
    """Draw and save the table's figures under ``out_dir/figures``; returns the PNG paths."""
    figdir = result.out_dir / "figures"
    ours = result.ours()
    figs = {
        "dsc_bars": rf.plot_dsc_bars(ours, report.paper_rows(result.table), result.conditions),
        "per_case_dsc": rf.plot_per_case_dsc(result.per_case, result.conditions),
        "params_vs_dsc": rf.plot_params_vs_dsc(report.paper_rows(result.table), ours, result.conditions),
    }
    logs = [(label, rd / "log.csv") for label, rds in result.run_dirs.items() for rd in rds if (rd / "log.csv").is_file()]
    if logs:
        figs["training_curves"] = rf.plot_training_curves(
            [p for _, p in logs], result.conditions, labels=[f"{lab} ({p.parent.name})" for lab, p in logs])
    first_label, first_runs = next(iter(result.run_dirs.items()))
    info = next(i for i in experiments(result.table) if first_label in (i.config, *(f"{i.config}-{m}" for m in MODELS)))
    arrays = overlay_arrays(first_runs[0], store_root(result, info.dataset))
    if arrays is not None:
        image, gt, pred, case = arrays
        figs["overlays"] = rf.plot_overlays(image, gt, pred, None, get_spec(info.dataset), result.conditions, case_id=case)
    for k, fig in figs.items():
        result.files[f"fig_{k}"] = report.save_figure(fig, figdir / f"{k}.png")
    result.figures.update(figs)
    return {k: result.files[f"fig_{k}"] for k in figs}


__all__ = ["draw_figures", "overlay_arrays"]
