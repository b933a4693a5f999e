"""The canonical prepared store written by ``sam3d prepare`` (layout: docs/DESIGN.md).

```
<root>/dataset.json                 dataset-level meta (labels, target spacing, normalisation, ...)
<root>/cases/<id>_image.npy         float32 C x D x H x W
<root>/cases/<id>_label.npy         uint8 D x H x W (absent for unlabelled cases)
<root>/cases/<id>.json              per-case properties (written last: a case is complete when it exists)
<root>/splits_final.json            when the plan's split is ``folds``: nnU-Net's folds [{"train": [...], "val": [...]}]
```
Every store carries its spec in ``dataset.json`` (``plan``; :mod:`sam3dlib.data.plans` reads it).
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np

from sam3dlib.data.plans import data_label, missing_split_cases, spec_from_meta, store_split
from sam3dlib.data.specs import DatasetSpec
from sam3dlib.data.splits import Split, check_folds
from sam3dlib.utils.errors import UnknownCaseError, UserInputError
from sam3dlib.utils.fileio import read_json

#: nnU-Net's file names, the same in a raw user dataset and in a store: the dataset's description
#: (a store's plan and spec) and its cross-validation folds
META_FILE = "dataset.json"
SPLITS_FILE = "splits_final.json"
CASES_DIR = "cases"


#: ``dataset.json`` key: the case ids ``sam3d prepare`` writes (recorded before the first case, so
#: that an interrupted prepare is told apart from a finished store)
EXPECTED_CASES_KEY = "expected_cases"


def unfinished_message(root: Path, left: list[str], total: int) -> str:
    """``<root>: sam3d prepare did not finish: N of M cases are missing (...); rerun it to resume``."""
    listed = ", ".join(left[:5]) + (" ..." if len(left) > 5 else "")
    return (f"{root}: sam3d prepare did not finish: {len(left)} of {total} case(s) are missing ({listed}); "
            "rerun the same `sam3d prepare` command to resume (finished cases are kept)")


class StoreError(UserInputError, FileNotFoundError):
    """The folder is not a (complete) prepared store."""


class MissingLabelError(UserInputError, ValueError):
    """A case of a labelled split (train, val, test) has no label; the message names it and the split."""


def check_store_target(out: Path, what: str = "prepared store folder (--out)") -> None:
    """Refuse to prepare into a folder that holds other things than a (partial) store.

    An absent or empty folder, a store (it has ``dataset.json``; which dataset it holds is checked
    by the caller), or one holding only ``splits_final.json``, ``cases/`` and temporary files of
    an interrupted write, is fine.

    Raises:
        OutputError: ``out`` is a non-empty folder that is not a store (names a foreign entry).
    """
    import errno

    from sam3dlib.utils.fileio import TEMP_SUFFIX, OutputError

    out = Path(out)
    if not out.is_dir() or (out / META_FILE).is_file():  # a store may also hold what training caches there
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in (META_FILE, SPLITS_FILE, CASES_DIR)
                     and not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)))
    if foreign:
        raise OutputError(errno.EEXIST, f"cannot write {what} {out}: the folder is not empty and not a prepared "
                                        f"store (it holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); "
                                        "give a new or empty folder")


def case_paths(root: Path, case_id: str) -> dict[str, Path]:
    """Paths of one case's files in a store rooted at ``root``."""
    d = Path(root) / CASES_DIR
    return {"image": d / f"{case_id}_image.npy", "label": d / f"{case_id}_label.npy",
            "properties": d / f"{case_id}.json"}


def read_meta(root: str | Path) -> dict:
    """A store's ``dataset.json`` (written by ``sam3d prepare``) as a dict.

    Raises:
        StoreError: unreadable, invalid JSON, not an object, or without ``"dataset"`` (names the file).
    """
    meta_path = Path(root) / META_FILE
    meta = read_json(meta_path, StoreError, expect=dict)
    if "dataset" not in meta:
        raise StoreError(f"{meta_path}: no 'dataset' key; not written by `sam3d prepare`")
    return meta


class PreparedDataset:
    """Read access to a prepared store.

    Args:
        root: the folder written by ``sam3d prepare`` (e.g. ``data/synapse``).

    Raises:
        StoreError: ``dataset.json`` or ``cases/`` is missing, or the store holds no case.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.abspath(root))  # the store works after a change of working directory
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise StoreError(f"{meta_path} not found: {self.root} is not a prepared store; create it with "
                             f"`sam3d prepare --raw RAW --out {shlex.quote(str(self.root))}` (your own MSD / nnU-Net v2 "
                             f"folder) or `sam3d prepare DATASET --raw RAW --out {shlex.quote(str(self.root))}` (a paper "
                             "dataset)")
        self.meta: dict = read_meta(self.root)
        try:
            self.spec: DatasetSpec = spec_from_meta(self.meta)
        except ValueError as exc:
            raise StoreError(f"{meta_path}: {exc}") from None
        cases = self.root / CASES_DIR
        if not cases.is_dir():
            raise StoreError(f"{cases} not found; run `sam3d prepare` again to finish {self.root}")
        self.case_ids: list[str] = sorted(p.name[:-5] for p in cases.glob("*.json")
                                          if case_paths(self.root, p.name[:-5])["image"].is_file())
        if not self.case_ids:
            expected = self.expected_cases()
            if expected:
                raise StoreError(unfinished_message(self.root, expected, len(expected)))
            raise StoreError(f"{cases} holds no complete case; run `sam3d prepare` to (re)build {self.root}")
        self._case_set = frozenset(self.case_ids)
        self._props: dict[str, dict] = {}

    @property
    def data_label(self) -> str:
        """How outputs name this store's data (``"PHANTOM synapse data"`` for phantoms)."""
        return data_label(self.spec, self.meta)

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.root)!r}, dataset={self.spec.name!r}, cases={len(self.case_ids)})"

    def __len__(self) -> int:
        return len(self.case_ids)

    def _check(self, case_id: str) -> None:
        if case_id not in self._case_set:
            raise UnknownCaseError(f"case {case_id!r} is not in the store {self.root} ({len(self.case_ids)} cases)")

    def image(self, case_id: str) -> np.ndarray:
        """Preprocessed image, float32 ``C x D x H x W`` (memory-mapped, read-only)."""
        self._check(case_id)
        return np.load(case_paths(self.root, case_id)["image"], mmap_mode="r")

    def label(self, case_id: str) -> np.ndarray | None:
        """Label map, uint8 ``D x H x W`` (memory-mapped), or ``None`` for an unlabelled case."""
        self._check(case_id)
        p = case_paths(self.root, case_id)["label"]
        return np.load(p, mmap_mode="r") if p.is_file() else None

    def properties(self, case_id: str) -> dict:
        """Per-case properties (original geometry, crop box, spacings, source files)."""
        self._check(case_id)
        if case_id not in self._props:
            self._props[case_id] = json.loads(case_paths(self.root, case_id)["properties"].read_text())
        return self._props[case_id]

    def labelled_cases(self, case_ids: list[str], role: str, allow_missing: bool = False) -> tuple[list[str], list[str]]:
        """``(cases with a label, cases without)`` of ``case_ids``, a labelled split part (``role``:
        ``train``/``val``/``test``).

        Raises:
            MissingLabelError: a case lacks its label and ``allow_missing`` is False (the message
                names the cases and the split; the caller records the dropped ones otherwise).
        """
        have = [c for c in case_ids if self.label(c) is not None]
        missing = [c for c in case_ids if c not in set(have)]
        if missing and not allow_missing:
            raise MissingLabelError(
                f"{self.root}: {len(missing)} {role} case(s) of the split have no label: "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; restore the label file(s) and "
                "run `sam3d prepare` again, or pass --allow-missing-labels (allow_missing_labels=True) to leave "
                "them out (recorded in provenance.json / results.json)")
        return have, missing

    def source_label(self, case_id: str) -> Path | None:
        """The original label file a case was prepared from (``label_file`` of its properties,
        recorded absolute by :func:`~sam3dlib.data.preprocess.recorded_path`), or None."""
        gt = self.properties(case_id).get("label_file")
        return Path(gt) if gt else None

    def check_source_labels(self, case_ids: list[str], why: str) -> None:
        """Every case of ``case_ids`` has its original label file (evaluation scores against it).

        Called before work that will need them (training a run that is scored afterwards), so
        that a moved or relative path stops the command at once, not after the last epoch.

        Raises:
            MissingFileError: naming the first cases, their recorded paths, the store and ``why``.
        """
        from sam3dlib.utils.errors import MissingFileError

        bad = [(c, self.source_label(c)) for c in case_ids]
        bad = [(c, p) for c, p in bad if p is None or not p.is_absolute() or not p.is_file()]
        if bad:
            listed = ", ".join(f"{c} ({'none recorded' if p is None else p if p.is_absolute() else f'relative path {p}'})"
                               for c, p in bad[:3])
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise MissingFileError(
                f"{self.root}: original label file(s) of {len(bad)} case(s) not found: {listed}{more}; {why}. "
                "Prepare the store again from the raw folder (`sam3d prepare ... --out` a new folder)")

    def expected_cases(self) -> list[str] | None:
        """The cases ``sam3d prepare`` set out to write (recorded in ``dataset.json`` before the
        first case), or None for a store that did not record them."""
        listed = self.meta.get(EXPECTED_CASES_KEY)
        if listed is None and isinstance(self.meta.get("source_files"), dict):
            listed = list(self.meta["source_files"].get("cases", {}))  # a user store's raw record
        return sorted(map(str, listed)) if isinstance(listed, list) else None

    def unfinished_cases(self) -> list[str]:
        """Cases prepare set out to write that are not complete (an interrupted prepare)."""
        return sorted(set(self.expected_cases() or ()) - self._case_set)

    def check_finished(self) -> None:
        """Refuse a store whose prepare did not finish (before its splits are read).

        Raises:
            StoreError: naming the missing cases and how to resume.
        """
        left = self.unfinished_cases()
        if left:
            raise StoreError(unfinished_message(self.root, left, len(self.expected_cases() or ())))

    def folds(self) -> list[dict]:
        """The store's ``splits_final.json`` (its plan's split is ``folds``).

        Raises:
            StoreError: the file is missing or not a list of folds.
            DataFileError: a fold breaks :func:`~sam3dlib.data.splits.check_folds`' rules (no
                ``train``/``val`` list, overlap, a case that is not in the store).
        """
        self.check_finished()
        path = self.root / SPLITS_FILE
        try:
            folds = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path}: cannot read the store's folds ({exc}); run `sam3d prepare --raw` again") from None
        if not isinstance(folds, list) or not folds:
            raise StoreError(f"{path}: expected a list of folds [{{\"train\": [...], \"val\": [...]}}]")
        return check_folds(folds, self.case_ids, str(path))

    def split(self, protocol: str = "paper", test_set: str = "paper", fold: int | None = None) -> Split:
        """The split the store's plan names (:func:`~sam3dlib.data.plans.store_split`): the
        shipped lists, or fold ``fold`` (default 0) of ``splits_final.json``.

        Raises:
            StoreError: prepare did not finish (:meth:`check_finished`).
        """
        self.check_finished()
        return store_split(self.spec, self.case_ids, self.folds, protocol, test_set, fold)

    def missing_split_cases(self, split: Split) -> list[str]:
        """Cases the full split lists for train or test that this store lacks
        (:func:`~sam3dlib.data.plans.missing_split_cases`)."""
        return missing_split_cases(self.spec, self.meta, self.case_ids, split)
