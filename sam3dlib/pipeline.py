"""The product's road for any dataset: prepare (raw folder + plan) -> train -> predict -> evaluate.

The same steps as ``sam3d prepare`` / ``sam3d train`` / ``sam3d predict`` / ``sam3d evaluate``
(which call these), for scripts and notebooks::

    store = prepare("raw/Task02_Heart", "data/heart")          # a user's MSD / nnU-Net v2 folder
    run = train("data/heart", "runs/heart", profile="quick", fold=0)
    per_class_table(run)

Test-set evaluation follows the authors' code (``-val --valbest``): the best checkpoint
predicts every test case by sliding windows over the preprocessed volume, the softmax is
mapped back to the original geometry, written as NIfTI, and scored against the ORIGINAL
label file by the one evaluator, :func:`sam3dlib.evaluation.evaluator.evaluate_pairs` (in the
HD95 units of the store's plan). The scores are those ``sam3d predict`` + ``sam3d evaluate``
give on the same files.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm  # text bars: no widgets (they need a widget-aware front end)

from sam3dlib.config import ExperimentConfig, store_config
from sam3dlib.data.io import DataFileError
from sam3dlib.data.planning import DEFAULT_MEMORY_GB, PlannerSettings
from sam3dlib.data.plans import fold_of
from sam3dlib.data.prepare import prepare_dataset
from sam3dlib.data.preprocess import save_label_nifti
from sam3dlib.data.store import PreparedDataset
from sam3dlib.evaluation.evaluator import evaluate_pairs
from sam3dlib.evaluation.metrics import aggregate
from sam3dlib.inference.predictor import load_run, predict_case
from sam3dlib.modeling.constants import PATCH_SIZE
from sam3dlib.modeling.memory import decoder_state_bytes, training_bytes_per_voxel
from sam3dlib.training.trainer import train as train_run
from sam3dlib.utils import folder_lock
from sam3dlib.utils.fileio import atomic_write_csv, atomic_write_json, check_output_dir
from sam3dlib.utils.finished import is_finished

PREDICTIONS = "predictions"
#: what produced ``per_case.csv``/``summary.csv`` of a run (seed, checkpoint, cases)
RESULTS_FILE = "results.json"
#: why the test cases' original label files are needed (the reason named when one is missing)
SCORED_AGAINST = "the test metrics are computed against the original label files, as the authors' scripts do"


def evaluate_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike, case_ids: list[str] | None = None,
                 which: str = "best", device: str | None = None, progress: bool = True,
                 allow_missing_labels: bool = False) -> pd.DataFrame:
    """Predict and score a run's test cases; write ``predictions/``, ``per_case.csv``, ``summary.csv``.

    Args:
        run_dir: a training run.
        data_dir: the prepared store it was trained on.
        case_ids: cases to evaluate (default: the test cases of the run's protocol).
        which: ``best`` (default, the paper's ``--valbest``) or ``latest``.
        device: overrides the run's device.
        allow_missing_labels: leave out test cases without a label (recorded in ``results.json``
            ``dropped_unlabelled_cases`` and printed); without it they are an error.

    Returns:
        The summary frame (:func:`sam3dlib.evaluation.metrics.aggregate`).
    """

    run = Path(run_dir)
    loaded = load_run(run, device or _run_device(run), which, device_flag="--device " if device else "--set device=")
    store = PreparedDataset(data_dir)
    if case_ids is None:
        case_ids = list(store.split(loaded.config.protocol, fold=loaded.config.fold).test)
    absent = [c for c in case_ids if c not in set(store.case_ids)]
    if absent:
        raise DataFileError(f"{data_dir}: case(s) {', '.join(absent[:5])} to evaluate are not in the store "
                         f"({len(store.case_ids)} cases)")
    case_ids, dropped = store.labelled_cases(case_ids, "test", allow_missing_labels)
    if not case_ids:
        raise DataFileError(f"{data_dir}: no labelled test case of the {loaded.config.protocol} split to evaluate")
    store.check_source_labels(case_ids, SCORED_AGAINST)
    pairs = {}
    for case_id in tqdm(case_ids, desc="test cases", disable=not progress):
        props = store.properties(case_id)
        out = run / PREDICTIONS / f"{case_id}.nii.gz"
        save_label_nifti(predict_case(loaded, np.asarray(store.image(case_id)), props), props, out)
        pairs[case_id] = (out, str(store.source_label(case_id)))
    # HD95 units of the store's plan: voxels (the authors' scripts' convention), and mm too (HD95_strict)
    per_case = evaluate_pairs(pairs, store.spec, store.spec.hd95)
    summary = aggregate(per_case, store.spec)
    atomic_write_csv(run / "per_case.csv", per_case)
    atomic_write_csv(run / "summary.csv", summary)
    cfg = loaded.config
    atomic_write_json(run / RESULTS_FILE, {
        "seed": cfg.seed, "experiment": cfg.name, "profile": cfg.profile, "protocol": cfg.protocol,
        "encoder": cfg.encoder, "encoder_weights": cfg.encoder_weights, "checkpoint": Path(loaded.checkpoint).name,
        "data_dir": str(Path(data_dir).resolve()), "cases": list(case_ids), "files": ["per_case.csv", "summary.csv"],
        "dropped_unlabelled_cases": dropped,
    })
    if dropped:
        print(f"{len(dropped)} test case(s) without a label left out of the summary: {', '.join(dropped)}")
    return summary


def _run_device(run: Path) -> str:
    return ExperimentConfig.load(run / "config.json").device


def is_scored(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a finished training run whose test cases were scored.

    Training's finished marker (:func:`sam3dlib.utils.finished.is_finished`) plus
    :data:`RESULTS_FILE`, which :func:`evaluate_run` writes after every score file.
    """
    return is_finished(run_dir) and (Path(run_dir) / RESULTS_FILE).is_file()


def check_test_labels(config: ExperimentConfig, data_dir: str | os.PathLike, allow_missing_labels: bool = False) -> None:
    """Before training: every test case the run will be scored on has its original label file.

    Raises:
        MissingFileError: naming the cases and their recorded paths (e.g. a store prepared with a
            relative ``--raw`` by an older version, or raw data moved since).
    """
    store = PreparedDataset(data_dir)
    if store.spec.name != config.dataset:
        return  # the trainer refuses it with its own message
    test = list(store.split(config.protocol, fold=config.fold).test)
    test = [c for c in test if c in set(store.case_ids)]
    labelled, _ = store.labelled_cases(test, "test", allow_missing=True)
    store.check_source_labels(labelled, SCORED_AGAINST)


def run_experiment(config: ExperimentConfig, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   resume: bool = False, progress: bool = True, force: bool = False,
                   allow_missing_cases: bool = False, allow_missing_labels: bool = False,
                   allow_data_change: bool = False, which: str = "best") -> Path:
    """Train (:func:`sam3dlib.training.train`), then :func:`evaluate_run` on the test cases with the
    ``which`` checkpoint (``best``, the paper's ``--valbest``, or ``latest``).

    Under ``torchrun`` every rank trains; rank 0 alone evaluates. ``resume=True`` on a run that
    is finished and already scored does nothing; one killed during evaluation is scored again.
    ``force=True`` deletes the run in ``out_dir`` and starts over.

    Returns:
        The run directory (``out_dir``).
    """
    done = resume and not force and is_scored(out_dir)
    if not done:
        check_test_labels(config, data_dir, allow_missing_labels)
    main = int(os.environ.get("RANK", "0")) == 0
    check_output_dir(out_dir, "run folder (--out)")
    with folder_lock.hold(out_dir, "run folder (--out)") if main else contextlib.nullcontext():
        run = train_run(config, data_dir, out_dir, resume=resume, progress=progress, force=force,
                        allow_missing_cases=allow_missing_cases, allow_missing_labels=allow_missing_labels,
                        allow_data_change=allow_data_change)
        if main and not done:
            evaluate_run(run, data_dir, which=which, progress=progress, allow_missing_labels=allow_missing_labels)
    return run


def planner_settings(memory_gb: float = DEFAULT_MEMORY_GB) -> PlannerSettings:
    """The planner wired to the decoder's measured memory model and SAM's 16-pixel patch."""
    return PlannerSettings(training_bytes_per_voxel, decoder_state_bytes, memory_gb, PATCH_SIZE)


def prepare(raw: str | os.PathLike, out: str | os.PathLike, plan: dict[str, Any] | None = None,
            num_workers: int = 0, progress: bool = True, force: bool = False) -> PreparedDataset:
    """Plan and prepare a raw MSD / nnU-Net v2 folder into the store ``out`` (resumable).

    Args:
        raw: the raw folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        out: the store folder.
        plan: plan values to impose (``sam3dlib.data.planning.OVERRIDABLE``), e.g. ``{"memory_gb": 4}``.
        num_workers: worker processes.
        progress: progress bars.
        force: rebuild an existing store from scratch (e.g. after the raw data changed).
    """
    plan = dict(plan or {})
    return prepare_dataset(None, raw, out, num_workers, settings=planner_settings(plan.get("memory_gb", DEFAULT_MEMORY_GB)),
                           overrides=plan, progress=progress, force=force)


def config_for(data: str | os.PathLike, profile: str = "smoke", fold: int | None = 0,
               **overrides: Any) -> ExperimentConfig:
    """The experiment ``custom`` on the prepared store ``data`` (crop, batch and folds from its plan).

    ``fold`` applies to a store whose plan splits by folds; it is dropped for one whose plan
    names the paper's shipped split.

    Raises:
        StoreError: ``data`` is not a prepared store.
        ConfigError: a setting is out of range.
    """
    spec = PreparedDataset(data).spec
    return store_config(spec, profile, fold_of(spec, fold), **overrides)


def train(data: str | os.PathLike, out: str | os.PathLike, profile: str = "smoke", fold: int = 0,
          progress: bool = True, resume: bool = False, force: bool = False, **overrides: Any) -> Path:
    """Train ``custom`` on a prepared store, then predict and score its test cases.

    Returns:
        The run folder (``config.json``, ``log.csv``, ``training_curve.png``, ``per_case.csv``,
        ``summary.csv``, ``predictions/``).
    """
    config = config_for(data, profile, fold, **overrides)
    return run_experiment(config, data, out, resume=resume, progress=progress, force=force)




def per_class_table(run: str | os.PathLike) -> pd.DataFrame:
    """The run's test metrics, one row per region: DSC (%), HD95 (voxels), HD95 (mm)."""
    summary = pd.read_csv(Path(run) / "summary.csv")
    table = summary.pivot_table(index="region", columns="metric", values="mean", sort=False)
    table = table.rename(columns={"DSC": "DSC (%)", "HD95": "HD95 (voxels)", "HD95_strict": "HD95 (mm)"})
    table["DSC (%)"] = 100 * table["DSC (%)"]
    n = summary.groupby("region", sort=False)["n_cases"].max()
    table["cases"] = n.reindex(table.index)
    return table


__all__ = ["PREDICTIONS", "RESULTS_FILE", "config_for", "evaluate_run", "is_scored", "per_class_table",
           "planner_settings", "prepare", "run_experiment", "train"]
