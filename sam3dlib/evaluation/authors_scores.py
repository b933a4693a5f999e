"""The SAM3D authors' released prediction maps, scored by our evaluator and compared with their scores.

Their scoring scripts pair ``labelsTs/*.nii.gz`` with the prediction folder's ``*.nii.gz`` by
**sorted position**, so one missing prediction shifts every later case onto another case's
ground truth. Here cases are paired **by case id** (:func:`sam3dlib.evaluation.evaluator.match_cases`):
a ground truth without a prediction, or a prediction without a ground truth, is named and left
out, never paired with a neighbour.

Their per-case scores (``dice_pre.txt``; BraTS: ``dice_five.txt``) are blocks of lines: a line of
``*``, the prediction's file name, then ``Dice_<class>: 0.1234`` and ``hd_<class>: 1.2345`` lines
(4 decimals; HD95 MedPy's, in voxels, 0 when either mask is empty: our ``paper`` convention).
Their scripts open the file in append mode, so a file may hold several runs; each ends with a
``Mean_Dice`` summary and the last run is read. :func:`compare_scores` lists every case, class
and metric where theirs and ours differ by more than a tolerance (1e-3: above their rounding).
The formats in our words: docs/REPRODUCE.md, "Prediction maps and scores".
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sam3dlib.data.specs import DatasetSpec, get_spec
from sam3dlib.evaluation.evaluator import (
    EvaluationError,
    case_id_from_filename,
    evaluate_pairs,
    find_cases,
    match_cases,
)

#: Their class names in score files -> our region names (docs/REPRODUCE.md). Their lung script is not
#: published; the single tumour class is accepted under any of these names.
AUTHORS_CLASSES: dict[str, dict[str, str]] = {
    "synapse": {"spleen": "Spl", "right_kidney": "RKid", "left_kidney": "LKid", "gallbladder": "Gal",
                "liver": "Liv", "stomach": "Sto", "aorta": "Aor", "pancreas": "Pan"},
    "acdc": {"rv": "RV", "myo": "MYO", "lv": "LV"},
    "brats": {"et": "ET", "tc": "TC", "wt": "WT", "ed": "ED", "net": "NET"},
    "lung": {"tumor": "tumour", "tumour": "tumour", "lung": "tumour", "cancer": "tumour"},
}
#: Their metric prefixes -> ours.
AUTHORS_METRICS = {"dice": "DSC", "hd": "HD95"}
#: Score file names their scripts write, in the order looked for.
SCORE_FILES = ("dice_pre.txt", "dice_five.txt")
#: Disagreements above this are listed (their files round to 4 decimals).
TOLERANCE = 1e-3

_SCORE_LINE = re.compile(r"^(dice|hd)_([a-z_]+):\s*([-+0-9.eE]+|nan|inf)\s*$", re.IGNORECASE)
_STARS = re.compile(r"^\*{3,}\s*$")


class ScoreFileError(EvaluationError):
    """A score file that is not in the authors' format; the message names the file and line."""


def read_authors_scores(path: str | os.PathLike, dataset: str | DatasetSpec) -> pd.DataFrame:
    """Their per-case scores as a long frame ``case_id, file, region, metric, value`` (our names).

    Case ids come from the file names in the blocks (:func:`case_id_from_filename`). Of a file
    holding several runs (appended), the last run is read.

    Raises:
        ScoreFileError: no case block, a class name that is not the dataset's, or one case
            with two different values for one score in the run read.
    """
    path = Path(path)
    spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
    names = AUTHORS_CLASSES[spec.name]
    runs: list[list[tuple[int, str, str, float]]] = [[]]
    current: str | None = None
    after_stars = False
    for no, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.strip()
        if _STARS.match(line):
            after_stars = True
            continue
        if after_stars and line.lower().endswith((".nii.gz", ".nii")):
            current = line
        elif line.lower().startswith("mean_dice"):
            current = None
            runs.append([])
        after_stars = False
        m = _SCORE_LINE.match(line)
        if m and current is not None:
            cls = m.group(2).lower()
            if cls not in names:
                raise ScoreFileError(f"{path}, line {no}: class {m.group(2)!r} is not one of {spec.name}'s "
                                     f"({', '.join(names)})")
            runs[-1].append((no, current, f"{AUTHORS_METRICS[m.group(1).lower()]}:{names[cls]}", float(m.group(3))))
    last = next((r for r in reversed(runs) if r), None)
    if last is None:
        raise ScoreFileError(f"{path}: no per-case block (a line of '*', a .nii.gz file name, 'Dice_<class>: value' "
                             "lines) found")
    seen: dict[tuple[str, str], float] = {}
    rows = []
    for no, fname, key, value in last:
        if (fname, key) in seen:
            if abs(seen[(fname, key)] - value) > 1e-9:
                raise ScoreFileError(f"{path}, line {no}: {fname} has two values for {key.replace(':', ' ')}")
            continue
        seen[(fname, key)] = value
        metric, region = key.split(":")
        rows.append((case_id_from_filename(fname), fname, region, metric, value))
    return pd.DataFrame(rows, columns=["case_id", "file", "region", "metric", "value"])


def write_authors_scores(per_case: pd.DataFrame, path: str | os.PathLike, dataset: str | DatasetSpec,
                         files: Mapping[str, str] | None = None) -> Path:
    """Write per-case scores in the authors' ``dice_pre.txt`` layout (phantom stand-ins, tests).

    Args:
        per_case: ``case_id, region, metric, value`` (DSC in [0, 1], HD95 in voxels).
        files: ``{case_id: prediction file name}`` (default ``<case_id>.nii.gz``).
    """
    from sam3dlib.utils.fileio import atomic_write_text

    spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
    theirs = {}
    for name, region in AUTHORS_CLASSES[spec.name].items():
        theirs.setdefault(region, name)
    lines = []
    for case_id, g in per_case.groupby("case_id", sort=True):
        values = g.set_index(["metric", "region"])["value"]
        lines += ["*" * 20, (files or {}).get(case_id, f"{case_id}.nii.gz")]
        for prefix, metric in (("Dice", "DSC"), ("hd", "HD95")):
            lines += [f"{prefix}_{theirs[r]}: {values[(metric, r)]:.4f}" for r in theirs if (metric, r) in values.index]
    lines += ["*" * 20, "Mean_Dice", "*" * 20]
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")


def find_score_file(folder: str | os.PathLike) -> Path | None:
    """Their score file in (or under) ``folder``, if any (:data:`SCORE_FILES`)."""
    folder = Path(folder)
    for name in SCORE_FILES:
        hits = sorted(folder.rglob(name))
        if hits:
            return hits[0]
    return None


def compare_scores(ours: pd.DataFrame, theirs: pd.DataFrame, tol: float = TOLERANCE) -> pd.DataFrame:
    """Every case x region x metric where ``|ours - theirs| > tol``, and cases only one side has.

    Args:
        ours: per-case frame ``case_id, region, metric, value`` (DSC in [0, 1], HD95 in voxels).
        theirs: :func:`read_authors_scores`.

    Returns:
        ``case_id, region, metric, ours, theirs, difference, note``; ``note`` says
        ``no score of theirs`` / ``not scored by us`` for one-sided cases (NaN values then).
    """
    a = ours[ours["metric"].isin(AUTHORS_METRICS.values())].set_index(["case_id", "region", "metric"])["value"]
    b = theirs.set_index(["case_id", "region", "metric"])["value"]
    cases_a, cases_b = set(a.index.get_level_values(0)), set(b.index.get_level_values(0))
    b = b[b.index.get_level_values(1).isin(set(a.index.get_level_values(1)))]
    joined = pd.concat({"ours": a, "theirs": b}, axis=1, join="inner")
    joined["difference"] = joined["ours"] - joined["theirs"]
    bad = joined[(joined["difference"].abs() > tol) | joined["difference"].isna()].reset_index()
    bad["note"] = ""
    extra = [(c, "", "", float("nan"), float("nan"), float("nan"), "no score of theirs") for c in sorted(cases_a - cases_b)]
    extra += [(c, "", "", float("nan"), float("nan"), float("nan"), "not scored by us") for c in sorted(cases_b - cases_a)]
    cols = ["case_id", "region", "metric", "ours", "theirs", "difference", "note"]
    return pd.concat([bad[cols], pd.DataFrame(extra, columns=cols)], ignore_index=True)


def folder_digest(files: Mapping[str, Path]) -> str:
    """sha256 over ``name sha256`` lines of the files, sorted by name: one label for a set of files."""
    lines = []
    for name in sorted(files):
        h = hashlib.sha256(Path(files[name]).read_bytes()).hexdigest()
        lines.append(f"{Path(files[name]).name} {h}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass
class ReleasedScores:
    """The authors' maps scored by sam3dlib (:func:`score_released_predictions`).

    Attributes:
        per_case: our per-case frame of the paired cases (paper convention).
        missing: ground-truth cases without a prediction (named, not scored).
        extra: predictions without a ground truth (named, not scored).
        sha256: :func:`folder_digest` of the prediction files scored.
        score_file: their score file compared against, if any.
        disagreements: :func:`compare_scores` (empty without a score file).
    """

    per_case: pd.DataFrame
    missing: list[str]
    extra: list[str]
    sha256: str
    score_file: Path | None = None
    disagreements: pd.DataFrame = field(default_factory=pd.DataFrame)

    def describe(self) -> str:
        """Lines for a report: cases scored, missing/extra named, disagreements with their file."""
        n = self.per_case["case_id"].nunique() if len(self.per_case) else 0
        out = [f"{n} case(s) of the authors' predictions scored (paired by case id; files sha256 {self.sha256[:12]})"]
        if self.missing:
            out.append(f"no prediction for {len(self.missing)} case(s): {', '.join(self.missing)}")
        if self.extra:
            out.append(f"no ground truth for {len(self.extra)} prediction(s): {', '.join(self.extra)}")
        if self.score_file is not None:
            d = self.disagreements
            if d.empty:
                out.append(f"{self.score_file.name}: every score agrees with ours within {TOLERANCE}")
            else:
                cases = sorted(set(d["case_id"]))
                out.append(f"{self.score_file.name}: {len(d)} disagreement(s) > {TOLERANCE} in {len(cases)} case(s): "
                           f"{', '.join(cases)}")
        return "\n".join(out)


def score_released_predictions(dataset: str | DatasetSpec, pred_dir: str | os.PathLike,
                               gt: str | os.PathLike | Mapping[str, Path], score_file: str | os.PathLike | None = None,
                               resample: bool = False) -> ReleasedScores:
    """Score the authors' prediction maps with our evaluator (paper convention), paired by case id.

    Args:
        dataset: the dataset (name or spec).
        pred_dir: their prediction folder (``*.nii.gz``).
        gt: a ground-truth folder (``labelsTs``), or ``{case_id: label file}``.
        score_file: their ``dice_pre.txt``; None looks for one in ``pred_dir``
            (:func:`find_score_file`).
        resample: resample a prediction on another grid (nearest neighbour) instead of refusing it.

    Raises:
        EvaluationError: no prediction pairs with any ground truth, or a prediction off its grid.
    """
    spec = dataset if isinstance(dataset, DatasetSpec) else get_spec(dataset)
    preds = find_cases(pred_dir, "prediction")
    gts = dict(gt) if isinstance(gt, Mapping) else find_cases(gt, "ground-truth")
    pairs, missing, extra = match_cases(preds, gts)
    if not pairs:
        raise EvaluationError(f"no prediction in {pred_dir} has a ground truth (predictions: "
                              f"{', '.join(sorted(preds)[:5])}; ground truths: {', '.join(sorted(gts)[:5])})")
    per_case = evaluate_pairs(pairs, spec, "paper", resample)
    sf = Path(score_file) if score_file is not None else find_score_file(pred_dir)
    result = ReleasedScores(per_case, missing, extra, folder_digest({c: p for c, (p, _) in pairs.items()}), sf)
    if sf is not None:
        result.disagreements = compare_scores(per_case, read_authors_scores(sf, spec))
    return result


__all__ = ["AUTHORS_CLASSES", "SCORE_FILES", "TOLERANCE", "ReleasedScores", "ScoreFileError", "compare_scores",
           "find_score_file", "folder_digest", "read_authors_scores", "score_released_predictions",
           "write_authors_scores"]
