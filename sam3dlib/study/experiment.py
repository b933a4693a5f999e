"""One experiment end to end: train, predict the test cases with ``best.pt``, score them.

Test-set evaluation follows the paper's code (``-val --valbest``): the best checkpoint
predicts every test case by sliding windows over the preprocessed volume, the softmax is
mapped back to the original geometry, written as NIfTI, and scored against the ORIGINAL
label file by the one evaluator, :func:`sam3dlib.evaluation.evaluator.evaluate_pairs` (paper
convention: HD95 in voxels). The scores are those ``sam3d predict`` + ``sam3d evaluate`` give on
the same files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sam3dlib.config import ExperimentConfig
from sam3dlib.data.io import DataFileError
from sam3dlib.utils.errors import MissingFileError
from sam3dlib.utils.fileio import atomic_write_csv, atomic_write_json
from sam3dlib.utils.finished import is_finished

PREDICTIONS = "predictions"
#: what produced ``per_case.csv``/``summary.csv`` of a run (seed, checkpoint, cases)
RESULTS_FILE = "results.json"


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
    from sam3dlib.data.preprocess import save_label_nifti
    from sam3dlib.data.store import PreparedDataset
    from sam3dlib.evaluation.evaluator import evaluate_pairs
    from sam3dlib.evaluation.metrics import aggregate
    from sam3dlib.inference.predictor import load_run, predict_case

    run = Path(run_dir)
    loaded = load_run(run, device or _run_device(run), which)
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
    pairs = {}
    for case_id in tqdm(case_ids, desc="test cases", disable=not progress):
        props = store.properties(case_id)
        gt = props.get("label_file")
        if not gt or not Path(gt).is_file():
            raise MissingFileError(
                f"case {case_id}: original label file {gt!r} (from {store.root}) not found; the test metrics are "
                "computed against the original label, as the paper's scripts do"
            )
        out = run / PREDICTIONS / f"{case_id}.nii.gz"
        save_label_nifti(predict_case(loaded, np.asarray(store.image(case_id)), props), props, out)
        pairs[case_id] = (out, gt)
    # a user's dataset: HD95 in voxels (the tables' convention) and in mm (HD95_strict)
    per_case = evaluate_pairs(pairs, store.spec, "both" if store.is_user_dataset else "paper")
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


def run_experiment(config: ExperimentConfig, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   resume: bool = False, progress: bool = True, force: bool = False,
                   allow_missing_cases: bool = False, allow_missing_labels: bool = False) -> Path:
    """Train (:func:`sam3dlib.training.train`), then :func:`evaluate_run` on the test cases.

    Under ``torchrun`` every rank trains; rank 0 alone evaluates. ``resume=True`` on a run that
    is finished and already scored does nothing; one killed during evaluation is scored again.
    ``force=True`` deletes the run in ``out_dir`` and starts over.

    Returns:
        The run directory (``out_dir``).
    """
    from sam3dlib.training import train

    done = resume and not force and is_scored(out_dir)
    run = train(config, data_dir, out_dir, resume=resume, progress=progress, force=force,
                allow_missing_cases=allow_missing_cases, allow_missing_labels=allow_missing_labels)
    if int(os.environ.get("RANK", "0")) == 0 and not done:
        evaluate_run(run, data_dir, progress=progress, allow_missing_labels=allow_missing_labels)
    return run
