"""``sam3d check-data``: a layout checker for raw data (any supported layout) and prepared stores.

Each problem names the file. Checked: cases of the split that are missing (for a phantom, the
cases its ``PHANTOM.json`` lists), unreadable/truncated files, image/label shape or affine
mismatch, wrong modality (channel) count, NaN/inf, label values outside the dataset's label map
or non-integer labels, data types that are not real-valued scalars (RGB, complex), headers whose
voxel sizes disagree with their affine (the reader uses the affine's).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sam3dlib.data.io import DataFileError, HeaderWarning, grid_problem, load_label_nifti, read_header_note
from sam3dlib.data.plans import labelled_parts, spec_from_meta
from sam3dlib.data.preprocess import read_image
from sam3dlib.data.readers import RawCase, find_raw_cases
from sam3dlib.data.specs import DatasetSpec, get_spec
from sam3dlib.data.splits import all_case_ids, labelled_split_of
from sam3dlib.data.store import CASES_DIR, META_FILE, PreparedDataset, StoreError, case_paths, read_meta
from sam3dlib.utils.shell import shell_command


@dataclass(frozen=True)
class Problem:
    """One problem found: the file it concerns and what is wrong."""

    file: str
    message: str
    case_id: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def _expected_ids(dataset: str, root: Path) -> tuple[list[str], str]:
    marker = root / "PHANTOM.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("dataset") == dataset:
            return list(info["case_ids"]), "PHANTOM.json"
    return list(all_case_ids(dataset)), "the shipped split"


def _non_finite_problems(case: RawCase, img: np.ndarray) -> list[Problem]:
    """One problem per image file holding NaN/inf voxels (``img``: C x Z x Y x X of ``case.images``)."""
    per_file = len(case.images) == img.shape[0]  # nnU-Net: one file per channel; else one (4D) file
    counts: dict[Path, int] = {}
    for c, chan in enumerate(img):
        n = int(chan.size - np.count_nonzero(np.isfinite(chan)))
        if n:
            f = case.images[c] if per_file else case.images[0]
            counts[f] = counts.get(f, 0) + n
    return [Problem(str(f), f"{n} NaN/inf voxel(s)", case.case_id) for f, n in counts.items()]


def _header_problems(case: RawCase) -> list[Problem]:
    """One problem per file of ``case`` whose header the reader corrects (voxel sizes that
    disagree with the affine: :func:`~sam3dlib.data.io.mm_geometry`); unreadable files are left
    to the full read, which names them."""
    probs = []
    for f in (*case.images, *([case.label] if case.label is not None else [])):
        try:
            note = read_header_note(f)
        except DataFileError:
            continue
        if note:
            probs.append(Problem(*_split_message(note, f), case.case_id))
    return probs


def _check_raw_case(case: RawCase, dataset: str) -> list[Problem]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HeaderWarning)  # listed as problems instead
        return _header_problems(case) + _check_raw_case_files(case, dataset)


def _check_raw_case_files(case: RawCase, dataset: str) -> list[Problem]:
    spec = get_spec(dataset)
    if not case.images:
        f = case.extra.get("listed_image") or case.case_id
        return [Problem(str(f), "image file missing", case.case_id)]
    try:  # the one reader of a case's image: channel grouping, 3D/4D, every channel on the first's grid
        img, geom = read_image(case.images)
    except DataFileError as exc:
        return [Problem(*_split_message(str(exc), case.images[0]), case.case_id)]
    probs = _non_finite_problems(case, img)
    if img.shape[0] != spec.num_channels:
        probs.append(Problem(str(case.images[0]), f"{img.shape[0]} modality channel(s), {dataset} needs "
                                                  f"{spec.num_channels}", case.case_id))
    shape, affine = tuple(geom["original_shape"]), np.asarray(geom["original_affine"])
    if case.label is None:
        f = case.extra.get("listed_label") or f"label of {case.images[0]}"
        split = labelled_split_of(dataset, [case.case_id]).get(case.case_id)
        where = f" (a {split} case of the split)" if split else ""
        probs.append(Problem(str(f), f"label file missing{where}", case.case_id))
        return probs
    try:
        lab = load_label_nifti(case.label, spec.label_values)
    except DataFileError as exc:
        return probs + [Problem(str(case.label), str(exc).split(": ", 1)[-1], case.case_id)]
    problem = grid_problem(lab.data.shape, lab.affine, shape, affine)
    if problem:
        probs.append(Problem(str(case.label), problem, case.case_id))
    return probs


def _stale_store(root: Path, meta: dict) -> list[Problem]:
    """A store that recorded its raw files, whose raw folder (still there) changed since it was
    prepared: one problem."""
    from sam3dlib.data.prepare import SOURCE_FILES_KEY, source_changes, source_record
    from sam3dlib.data.user_dataset import load_user_dataset

    raw = Path(str(meta.get("source_root", "")))
    if SOURCE_FILES_KEY not in meta or not raw.is_dir():
        return []  # a store without the record (a paper dataset's, an older one), or moved away from its raw data
    try:
        changes = source_changes(meta[SOURCE_FILES_KEY], source_record(load_user_dataset(raw, report=lambda e: None)))
    except (OSError, ValueError) as exc:
        return [Problem(str(raw), f"cannot compare with the raw data this store was prepared from ({exc})")]
    if not changes:
        return []
    return [Problem(str(root / META_FILE), f"the raw data in {raw} changed since this store was prepared "
                                           f"({'; '.join(changes[:8])}); rebuild it: "
                                           f"`{shell_command('sam3d', 'prepare', '--raw', raw, '--out', root, '--force')}`")]


def _unfinished(root: Path) -> str | None:
    """The message of a store whose prepare did not finish, else None."""

    try:
        PreparedDataset(root).check_finished()
    except StoreError as exc:
        return str(exc) if "did not finish" in str(exc) else None
    return None


def _check_store(spec: DatasetSpec, root: Path) -> list[Problem]:
    dataset = spec.name
    try:
        meta = read_meta(root)
    except StoreError as exc:
        return [Problem(*_split_message(str(exc), root))]
    probs = []
    if meta.get("dataset") != spec.name:
        probs.append(Problem(str(root / META_FILE), f"store is for {meta.get('dataset')!r}, not {spec.name!r}"))
    probs += _stale_store(root, meta)
    ids = sorted(p.name[:-5] for p in (root / CASES_DIR).glob("*.json"))
    allowed = set(meta.get("unlabelled_split_cases") or {})  # prepared with --allow-missing-labels
    unfinished = _unfinished(root)
    if unfinished:  # the folds name cases not written yet: that is the unfinished prepare, not the folds
        probs.append(Problem(str(root), unfinished.split(": ", 1)[1]))
        labelled = {}
    else:
        parts = labelled_parts(spec, ids, lambda: PreparedDataset(root).folds())
        labelled = {c: s for c, s in parts.items() if c not in allowed}
    for cid in tqdm(ids, desc=f"check {dataset}"):
        paths = case_paths(root, cid)
        try:
            img = np.load(paths["image"], mmap_mode="r")
        except (OSError, ValueError) as exc:
            probs.append(Problem(str(paths["image"]), f"cannot read ({exc})", cid))
            continue
        if img.ndim != 4 or img.shape[0] != spec.num_channels:
            probs.append(Problem(str(paths["image"]), f"shape {img.shape}, expected {spec.num_channels} x D x H x W", cid))
        if not np.all(np.isfinite(img)):
            probs.append(Problem(str(paths["image"]), "NaN/inf values", cid))
        split = labelled.get(cid)
        if split and not paths["label"].is_file():
            probs.append(Problem(str(paths["label"]), f"label missing for {cid}, a {split} case of the split", cid))
        if paths["label"].is_file():
            lab = np.load(paths["label"], mmap_mode="r")
            if lab.shape != img.shape[1:]:
                probs.append(Problem(str(paths["label"]), f"label shape {lab.shape} != image shape {img.shape[1:]}", cid))
            bad = sorted(set(np.unique(lab).tolist()) - set(spec.labels))
            if bad:
                probs.append(Problem(str(paths["label"]), f"unexpected label value(s) {bad}", cid))
    return probs


def check_dataset(dataset: str, path: Path, expect_all: bool | None = None) -> list[Problem]:
    """All problems found in ``path`` (a raw layout or a prepared store) for ``dataset``.

    Args:
        dataset: ``synapse``, ``acdc``, ``lung`` or ``brats``.
        path: the raw root or the prepared store.
        expect_all: report split cases that are absent (default: yes for raw data; a phantom's
            ``PHANTOM.json`` narrows the expected ids to its own).
    """
    spec = get_spec(dataset)
    root = Path(path)
    if not root.is_dir():
        return [Problem(str(root), "folder not found")]
    if (root / META_FILE).is_file() and (root / CASES_DIR).is_dir():
        return _check_store(spec, root)
    try:
        cases = find_raw_cases(spec.name, root)
    except (FileNotFoundError, ValueError) as exc:
        return [Problem(str(root), str(exc).split(": ", 1)[-1])]
    if cases[0].layout == "nnunet_v1":
        return []  # preprocessed arrays are checked when `sam3d prepare` converts them
    probs: list[Problem] = []
    if expect_all is not False:
        expected, why = _expected_ids(spec.name, root)
        found = {c.case_id for c in cases}
        for cid in sorted(set(expected) - found):
            probs.append(Problem(str(root / cid), f"case {cid} of {why} not found", cid))
    for case in tqdm(cases, desc=f"check {spec.name}"):
        probs += _check_raw_case(case, spec.name)
    return probs


def check_user_dataset(path: Path) -> list[Problem]:
    """All problems found in a user's raw MSD / nnU-Net v2 folder or its prepared store.

    Raw: ``dataset.json`` (a problem there stops the check), the file listing (every listed
    but missing image or label, missing channel file), then every complete case (each case's
    first problem: undeclared or non-integer label values, channel count, image/label grid,
    unreadable files). A prepared store (of any dataset): as :func:`check_dataset`, with the
    store's own plan.
    """
    from sam3dlib.data.prepare import check_declared_labels
    from sam3dlib.data.preprocess import crop_case
    from sam3dlib.data.user_dataset import load_user_dataset

    root = Path(path)
    if not root.is_dir():
        return [Problem(str(root), "folder not found")]
    if (root / META_FILE).is_file() and (root / CASES_DIR).is_dir():
        try:
            meta = read_meta(root)
        except StoreError as exc:
            return [Problem(*_split_message(str(exc), root))]
        try:
            spec = spec_from_meta(meta)
        except ValueError as exc:
            return [Problem(str(root / META_FILE), str(exc))]
        return _check_store(spec, root)
    probs: list[Problem] = []
    try:  # dataset.json problems stop the check; each case's missing files are one problem each
        ds = load_user_dataset(root, report=lambda exc: probs.append(Problem(*_split_message(str(exc), root))))
    except (FileNotFoundError, ValueError) as exc:
        return probs + [Problem(*_split_message(str(exc), root))]
    values = sorted(ds.labels)
    for case in tqdm(ds.cases, desc=f"check {ds.name}"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HeaderWarning)  # listed as problems instead
            probs += _header_problems(case)
            try:
                check_declared_labels(case.label, values, root / META_FILE)
                crop_case(case.images, case.label, len(ds.channel_names), values)
            except (OSError, ValueError) as exc:
                probs.append(Problem(*_split_message(str(exc), case.images[0]), case.case_id))
    return probs


def _split_message(message: str, default: Path) -> tuple[str, str]:
    """``"path: what"`` -> ``(path, what)``; a message without a path is about ``default``."""
    head, sep, tail = message.partition(": ")
    return (head, tail) if sep and ("/" in head or head.endswith((".gz", ".nii", ".json"))) else (str(default), message)
