"""The shipped data splits (``resources/splits.json``) and the ``paper``/``clean`` protocols.

The lists are the hard-coded fold-0 lists of the authors' trainers (see the ``source`` entry of
each dataset in ``splits.json``). In the original code the trainer's ``val`` list *is* the test
set: model selection (``model_best``) and postprocessing were decided on the test cases. The
``paper`` protocol keeps that (``val == test``); the ``clean`` protocol holds a deterministic 20 %
of the training cases out for validation (whole patients for ACDC) and never looks at the test
cases before the final evaluation.

BraTS: which subset the paper scored is ambiguous. ``test_set="paper"`` (default, the code: the
73 trainer-``val`` cases that SAM3D's ``-val --valbest`` run predicts) or ``test_set="nnformer"``
(the 24 nnFormer ``imagesTs`` cases, excluded from training in both variants).
"""
from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from sam3dlib.data.io import DataFileError
from sam3dlib.data.specs import DATASETS
from sam3dlib.utils.errors import ConfigError

PROTOCOLS = ("paper", "clean")
#: Each protocol in one sentence, for reports (what a reader must know to judge the scores).
PROTOCOL_SENTENCES = {
    "paper": ("paper protocol (the authors' code): the validation cases are the test cases, so the checkpoint "
              "kept (best online validation Dice) is selected on the test cases and the scores are optimistic"),
    "clean": ("clean protocol: a fixed ~20 % of the training cases validate and pick the checkpoint; the test "
              "cases are seen only by the final evaluation"),
}
TEST_SETS = ("paper", "nnformer")
#: fraction of the training cases held out for validation by the ``clean`` protocol
CLEAN_VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """Case ids of one split. ``protocol`` is recorded with every result."""

    dataset: str
    protocol: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    test_set: str = "paper"
    #: the fold of a user dataset's ``splits_final.json`` (None: the paper's fixed split)
    fold: int | None = None

    def as_dict(self) -> dict:
        """JSON-ready form (lists), e.g. for writing next to a result."""
        d = {"dataset": self.dataset, "protocol": self.protocol, "test_set": self.test_set,
             "train": list(self.train), "val": list(self.val), "test": list(self.test)}
        return d if self.fold is None else {**d, "fold": self.fold}


@cache
def _splits() -> dict:
    return json.loads(resources.files("sam3dlib.resources").joinpath("splits.json").read_text())


def raw_split(dataset: str) -> dict:
    """The ``splits.json`` entry of ``dataset`` (lists as stored, plus their sources)."""
    key = dataset.lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return _splits()[key]


def all_case_ids(dataset: str) -> tuple[str, ...]:
    """Every labelled case id any split of ``dataset`` refers to (sorted)."""
    s = raw_split(dataset)
    ids = set(s["train"]) | set(s["test"]) | set(s.get("unused_or_internal_val", []))
    return tuple(sorted(ids))


def labelled_split_of(dataset: str, case_ids: Iterable[str]) -> dict[str, str]:
    """``{case_id: "train"|"test"}`` for those of ``case_ids`` that the shipped split lists as
    labelled training or test cases (a case there must have a label file)."""
    s = raw_split(dataset)
    role = {**{c: "test" for c in s["test"]}, **{c: "train" for c in s["train"]}}
    return {c: role[c] for c in case_ids if c in role}


def _group(dataset: str, case_id: str) -> str:
    """Cases that must stay on one side of a split (ACDC: the two frames of a patient)."""
    if dataset == "acdc":
        m = re.match(r"(patient\d+)", case_id)
        return m.group(1) if m else case_id
    return case_id


def _clean_val(dataset: str, train: list[str]) -> list[str]:
    groups = sorted({_group(dataset, c) for c in train})
    if len(groups) < 2:
        raise ConfigError(
            f"protocol 'clean' for {dataset}: need at least 2 training {'patients' if dataset == 'acdc' else 'cases'} "
            f"to hold one out for validation, found {len(groups)}")
    n_val = max(1, math.floor(CLEAN_VAL_FRACTION * len(groups) + 0.5))
    n_val = min(n_val, len(groups) - 1)
    rng = random.Random(f"sam3dlib-clean-{dataset}")  # string seeds are stable across runs
    chosen = set(rng.sample(groups, n_val))
    return [c for c in train if _group(dataset, c) in chosen]


def get_split(dataset: str, protocol: str = "paper", available: Iterable[str] | None = None,
              test_set: str = "paper") -> Split:
    """The split of ``dataset`` under ``protocol``.

    Args:
        dataset: ``synapse``, ``acdc``, ``lung`` or ``brats``.
        protocol: ``paper`` (val = test, as the original code selected checkpoints on the test
            cases) or ``clean`` (val = a deterministic ~20 % of train, at least 1 case; train
            excludes it; test unchanged).
        available: if given, every list is restricted to these case ids (e.g. a phantom or a
            partial download). The ``clean`` validation cases are drawn from the restricted
            training list, so they equal those of the full data only when all cases are present.
        test_set: BraTS only: ``paper`` (73 cases, the code) or ``nnformer`` (24 cases).

    Returns:
        A frozen :class:`Split` with sorted tuples.

    Raises:
        ValueError: unknown dataset/protocol/test_set, or restriction leaves train or test empty.
    """
    key = dataset.lower()
    s = raw_split(key)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if test_set not in TEST_SETS:
        raise ConfigError(f"unknown test_set {test_set!r}; choose one of {', '.join(TEST_SETS)}")
    train = sorted(s["train"])
    if test_set == "nnformer":
        if key != "brats":
            raise ConfigError(f"test_set='nnformer' exists only for brats, not {dataset!r}")
        test = sorted(s["unused_or_internal_val"])
    else:
        test = sorted(s["test"])
    if available is not None:
        have = set(available)
        train = [c for c in train if c in have]
        test = [c for c in test if c in have]
        for name, lst in (("train", train), ("test", test)):
            if not lst:
                raise DataFileError(
                    f"split of {key} ({protocol}, test_set={test_set}): none of the {name} cases is among the "
                    f"{len(have)} available cases (e.g. {sorted(have)[:3]}); are these {key} case ids?")
    if protocol == "paper":
        val = list(test)
    else:
        val = _clean_val(key, train)
        train = [c for c in train if c not in set(val)]
    return Split(key, protocol, tuple(train), tuple(val), tuple(test), test_set)


#: nnU-Net's cross-validation needs at least two folds (and two labelled cases)
MIN_FOLDS = 2


def check_num_folds(num_folds: int, num_cases: int, where: str, explicit: bool = True) -> None:
    """The one rule for a planned k-fold split's size (``--plan num_folds``, :func:`kfold_splits`).

    ``num_folds`` must be at least :data:`MIN_FOLDS`; the dataset needs at least 2 labelled
    cases; a ``num_folds`` the user chose (``explicit``) must not exceed the number of cases
    (the default of 5 becomes one fold per case for smaller datasets, leave one out).

    Raises:
        ConfigError: naming ``where`` (e.g. the raw folder) and the fix.
    """
    if num_cases < MIN_FOLDS:
        raise ConfigError(f"{where}: {num_cases} labelled case(s); cross-validation folds need at least "
                          f"{MIN_FOLDS} (a training and a validation case)")
    if num_folds < MIN_FOLDS:
        raise ConfigError(f"{where}: num_folds={num_folds}; at least {MIN_FOLDS} folds are needed")
    if explicit and num_folds > num_cases:
        raise ConfigError(f"{where}: num_folds={num_folds} but the dataset has {num_cases} labelled case(s); "
                          f"choose num_folds between {MIN_FOLDS} and {num_cases}")


def check_folds(folds: object, case_ids: Iterable[str], where: str) -> list[dict[str, list[str]]]:
    """The one validator of a user dataset's folds (``splits_final.json`` or planned).

    Every fold must be ``{"train": [...], "val": [...]}`` with a non-empty train and a non-empty
    val list, train and val disjoint (else validation leaks into training), and only known case
    ids; the dataset needs at least 2 cases (nnU-Net's ``splits_final.json`` rules).

    Returns:
        The folds as ``[{"train": sorted ids, "val": sorted ids}]``.

    Raises:
        DataFileError: naming ``where`` (the file), the fold and what is wrong.
    """
    have = set(case_ids)
    if len(have) < MIN_FOLDS:
        raise DataFileError(f"{where}: {len(have)} labelled case(s); cross-validation folds need at least "
                            f"{MIN_FOLDS} (a training and a validation case)")
    if not isinstance(folds, list) or not folds or not all(
            isinstance(f, dict) and {"train", "val"} <= set(f) and all(isinstance(f[k], list) for k in ("train", "val"))
            for f in folds):
        raise DataFileError(f"{where}: expected nnU-Net's list of folds [{{\"train\": [...], \"val\": [...]}}]")
    out = []
    for i, f in enumerate(folds):
        train, val = [str(c) for c in f["train"]], [str(c) for c in f["val"]]
        unknown = sorted((set(train) | set(val)) - have)
        if unknown:
            raise DataFileError(f"{where}: fold {i} lists case(s) {unknown[:5]} that are not training cases")
        for name, lst in (("train", train), ("val", val)):
            if not lst:
                raise DataFileError(f"{where}: fold {i} has an empty {name!r} list; every fold needs training "
                                    "and validation cases")
        both = sorted(set(train) & set(val))
        if both:
            raise DataFileError(f"{where}: fold {i} has case(s) {both[:5]} in both 'train' and 'val' "
                                "(validation would leak into training)")
        out.append({"train": sorted(train), "val": sorted(val)})
    return out


def user_split(dataset: str, folds: list[dict], fold: int, protocol: str = "paper",
               available: Iterable[str] | None = None) -> Split:
    """Fold ``fold`` of a user dataset's nnU-Net-style folds as a :class:`Split`.

    The fold's ``val`` cases are the test cases (scored after training, as nnU-Net's
    cross-validation). ``paper``: they also select the best checkpoint (val = test, like the
    paper's code); ``clean``: a deterministic ~20 % of the fold's training cases is held out
    for that instead.

    Raises:
        ConfigError: unknown protocol or a fold number out of range.
        DataFileError: a fold with no case in ``available`` for training or testing.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not 0 <= fold < len(folds):
        raise ConfigError(f"fold {fold} does not exist: {dataset} has folds 0..{len(folds) - 1}")
    have = set(available) if available is not None else None
    train, test = (sorted(c for c in folds[fold][k] if have is None or c in have) for k in ("train", "val"))
    for name, lst in (("train", train), ("val", test)):
        if not lst:
            raise DataFileError(f"fold {fold} of {dataset}: none of its {name} cases is in the store")
    if protocol == "paper":
        val = list(test)
    else:
        val = _clean_val(dataset, train)
        train = [c for c in train if c not in set(val)]
    return Split(dataset, protocol, tuple(train), tuple(val), tuple(test), "paper", fold)
