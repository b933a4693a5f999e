"""The plan reader: every prepared store is a raw folder plus a plan (nnU-Net v2's way).

A plan is the :meth:`~sam3dlib.data.specs.DatasetSpec.to_dict` form of a dataset's spec:
labels, scored regions, crop (patch) and batch size, modality (which picks the normalisation
scheme), target spacing, batch Dice, where the split comes from (``split``: ``shipped`` = the
paper's lists, ``folds`` = the store's ``splits_final.json``) and the HD95 units its scores
report (``hd95``). ``sam3d prepare`` writes it into the store's ``dataset.json`` (key ``plan``);
the trainer, the predictor and the evaluator read only that.

Where a plan comes from:

* the paper's four datasets: committed plans, ``resources/plans/<name>.json``, built from the
  facts in ``resources/datasets.json`` (:func:`paper_plan`; a test keeps them equal);
* a user's MSD / nnU-Net v2 folder: the planner (:func:`sam3dlib.data.planning.make_plan`).

This module is the one place that tells the two apart (stores prepared before plans were
written hold no ``plan``: their committed plan is read).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sam3dlib.data.specs import DATASETS, PLAN_KEY, DatasetSpec, committed_plan, paper_spec_dict
from sam3dlib.data.splits import Split, get_split, labelled_split_of, user_split
from sam3dlib.utils.errors import ConfigError


def paper_plan(name: str) -> dict[str, Any]:
    """The plan of a paper dataset, built from ``resources/datasets.json`` (what the committed
    file holds; :func:`committed_plan` reads the file)."""
    return DatasetSpec.from_dict(paper_spec_dict(name)).to_dict()


def write_committed_plans(folder: str | Path) -> list[Path]:
    """Write :func:`paper_plan` of each paper dataset to ``folder/<name>.json`` (regenerates the
    committed plans after ``datasets.json`` changed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in DATASETS:
        path = folder / f"{name}.json"
        path.write_text(json.dumps(paper_plan(name), indent=1) + "\n")
        out.append(path)
    return out


def plan_of(meta: dict) -> dict[str, Any]:
    """The plan of a store from its ``dataset.json`` (a store prepared before plans were written
    into it holds none: its dataset's committed plan)."""
    return meta[PLAN_KEY] if PLAN_KEY in meta else committed_plan(str(meta["dataset"]))


def spec_from_meta(meta: dict) -> DatasetSpec:
    """The :class:`DatasetSpec` of a store (or a run's copy of it) from its ``dataset.json``.

    Raises:
        ValueError: the plan lacks a key or breaks a rule of :meth:`DatasetSpec.from_dict`.
    """
    return DatasetSpec.from_dict(plan_of(meta))


def store_split(spec: DatasetSpec, case_ids: Sequence[str], folds: Callable[[], list[dict]],
                protocol: str = "paper", test_set: str = "paper", fold: int | None = None) -> Split:
    """The split a store's plan names: the shipped lists (restricted to ``case_ids``) or fold
    ``fold`` (default 0) of its ``splits_final.json`` (``folds()`` reads them).

    Raises:
        ConfigError: ``fold`` given for a shipped split, or out of range; unknown protocol.
    """
    if spec.split == "folds":
        return user_split(spec.name, folds(), 0 if fold is None else fold, protocol, case_ids)
    if fold is not None:
        raise ConfigError(f"{spec.name} has the paper's fixed split; fold={fold} applies to datasets with folds "
                          "(your own, prepared with `sam3d prepare --raw`)")
    return get_split(spec.name, protocol, available=case_ids, test_set=test_set)


def fold_of(spec: DatasetSpec, fold: int | None) -> int | None:
    """The fold a run of this store trains on: ``fold`` when its plan splits by folds, ``None``
    (the shipped split) otherwise."""
    return fold if spec.split == "folds" else None


def missing_split_cases(spec: DatasetSpec, meta: dict, case_ids: Iterable[str], split: Split) -> list[str]:
    """Cases the full shipped split lists for train or test that the store lacks: none when the
    split is the store's own folds (made from its cases) or the store holds phantoms (a few
    synthetic cases under ids of the real split)."""
    if spec.split == "folds" or meta.get("phantom"):
        return []
    full = get_split(spec.name, split.protocol, test_set=split.test_set)
    return sorted((set(full.train) | set(full.test)) - set(case_ids))


def labelled_parts(spec: DatasetSpec, case_ids: Sequence[str], folds: Callable[[], list[dict]]) -> dict[str, str]:
    """``{case: split part}`` of the store's cases that must have a label: those the shipped
    split lists as train or test, or every fold's train/val cases (``splits_final.json``)."""
    if spec.split == "shipped":
        return labelled_split_of(spec.name, case_ids)
    have = set(case_ids)
    return {c: part for fold in folds() for part in ("train", "val")
            for c in fold.get(part, []) if c in have}


def data_label(spec: DatasetSpec, meta: dict) -> str:
    """How outputs name a store's data: ``"PHANTOM synapse data"`` for phantoms, else the name."""
    return f"PHANTOM {spec.name} data" if meta.get("phantom") else spec.name


__all__ = ["committed_plan", "data_label", "fold_of", "labelled_parts", "missing_split_cases", "paper_plan", "plan_of",
           "spec_from_meta", "store_split", "write_committed_plans"]
