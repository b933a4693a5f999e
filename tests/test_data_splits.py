"""Shipped splits equal the reference; paper/clean protocols; restriction to available cases."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sam3dlib.data.splits import all_case_ids, get_split

REFERENCE = Path(__file__).resolve().parents[1] / "sam3dlib" / "resources" / "splits.json"
#: sha256 of splits.json as gathered from the authors' code (sam3dlib/resources/SOURCES.md); an edit changes it
SPLITS_SHA256 = "971c5562be5f3969869795e25faa0582794163ef2dd8b10642dced78b0b638a0"

COUNTS = [("synapse", 18, 12), ("acdc", 160, 40), ("brats", 387, 73), ("lung", 50, 13)]


def _ref() -> dict:
    return json.loads(REFERENCE.read_text())


def test_shipped_splits_are_the_gathered_file():
    assert hashlib.sha256(REFERENCE.read_bytes()).hexdigest() == SPLITS_SHA256


@pytest.mark.parametrize("dataset,n_train,n_test", COUNTS)
def test_paper_split_equals_reference(dataset, n_train, n_test):
    s = get_split(dataset)
    ref = _ref()[dataset]
    assert s.protocol == "paper"
    assert list(s.train) == sorted(ref["train"]) and list(s.test) == sorted(ref["test"])
    assert (len(s.train), len(s.test)) == (n_train, n_test)
    assert s.val == s.test  # model selection on the test cases, as the original code
    assert not set(s.train) & set(s.test)


@pytest.mark.parametrize("dataset", ["synapse", "acdc", "brats", "lung"])
def test_clean_split_holds_out_training_cases(dataset):
    paper, clean = get_split(dataset), get_split(dataset, "clean")
    assert clean.test == paper.test
    assert set(clean.train) | set(clean.val) == set(paper.train)
    assert not set(clean.train) & set(clean.val) and not set(clean.val) & set(clean.test)
    assert 0.15 * len(paper.train) <= len(clean.val) <= 0.25 * len(paper.train)
    assert get_split(dataset, "clean") == clean  # deterministic


def test_clean_acdc_keeps_patients_together():
    s = get_split("acdc", "clean")
    val_patients = {c.split("_")[0] for c in s.val}
    assert not any(c.split("_")[0] in val_patients for c in s.train)


def test_available_restricts_every_list():
    avail = ["img0005", "img0006", "img0007", "img0001", "img0002", "img9999"]
    s = get_split("synapse", "paper", available=avail)
    assert s.train == ("img0005", "img0006", "img0007") and s.test == ("img0001", "img0002")
    c = get_split("synapse", "clean", available=avail)
    assert len(c.val) == 1 and len(c.train) == 2 and c.val[0] in avail


def test_brats_test_set_choice():
    s = get_split("brats", test_set="nnformer")
    assert len(s.test) == 24 and s.val == s.test and not set(s.test) & set(s.train)
    assert len(all_case_ids("brats")) == 387 + 73 + 24


@pytest.mark.parametrize("kwargs,match", [
    ({"dataset": "btcv"}, "unknown dataset"),
    ({"dataset": "synapse", "protocol": "fold0"}, "unknown protocol"),
    ({"dataset": "synapse", "test_set": "nnformer"}, "only for brats"),
    ({"dataset": "synapse", "available": ["img0005"]}, "none of the test cases"),
    ({"dataset": "lung", "available": ["lung_001"]}, "none of the train cases"),
    ({"dataset": "synapse", "protocol": "clean", "available": ["img0005", "img0001"]}, "at least 2 training"),
])
def test_split_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_split(**kwargs)
