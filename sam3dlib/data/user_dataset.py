"""A user's dataset in the Medical Segmentation Decathlon or nnU-Net v2 raw layout.

Layouts (told apart by the keys of ``dataset.json``):

* ``msd``: ``dataset.json`` with ``modality`` (``{"0": "CT"}``), ``labels``
  (``{"0": "background", "1": "liver"}``) and ``training`` (``[{"image": "./imagesTr/x.nii.gz",
  "label": "./labelsTr/x.nii.gz"}]``); an image is one 3D file or one 4D file with the
  modalities last (or nnU-Net-style ``x_0000.nii.gz`` channel files);
* ``nnunet_v2``: ``dataset.json`` with ``channel_names`` (``{"0": "T2", "1": "ADC"}``),
  ``labels`` (``{"background": 0, "PZ": 1}``; a list value such as ``"whole tumour": [1, 2, 3]``
  is a region to report), ``numTraining`` and ``file_ending``; images
  ``imagesTr/CASE_XXXX<file_ending>`` (one file per channel), labels ``labelsTr/CASE<file_ending>``.

Either may hold a ``splits_final.json`` (nnU-Net's list of ``{"train": [...], "val": [...]}``
folds) next to ``dataset.json``. Every error is a :class:`DatasetFormatError` naming the file.
Only the file listing and ``dataset.json`` are checked here; the voxels (label values, grids,
channel counts) are checked when the cases are read (:mod:`sam3dlib.data.prepare`).
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sam3dlib.data.io import NIFTI_SUFFIXES, channel_case_id, nifti_stem
from sam3dlib.data.readers import RawCase, channel_files
from sam3dlib.data.splits import check_folds
from sam3dlib.data.store import META_FILE, SPLITS_FILE
from sam3dlib.utils.errors import MissingFileError, UserInputError
from sam3dlib.utils.values import as_int

#: the raw layouts of a user's dataset (docs/DATA.md)
USER_LAYOUTS = ("msd", "nnunet_v2")


class DatasetFormatError(UserInputError, ValueError):
    """A user dataset's file layout or ``dataset.json`` is wrong; the message names the file."""


@dataclass(frozen=True)
class UserDataset:
    """What ``dataset.json`` and the folder listing say about a user's dataset.

    Attributes:
        root: the raw folder.
        layout: ``msd`` or ``nnunet_v2``.
        name: the dataset's name (``dataset.json`` ``name``, else the folder's name).
        channel_names: one name per input channel (``CT``, ``MRI``, ``T2`` ...), in channel order.
        labels: label value -> name, 0 = background, values 0..K-1.
        label_regions: regions that ``dataset.json`` declares as unions of labels (nnU-Net v2 lists).
        cases: the labelled training cases, sorted by id.
        splits: the folds of ``splits_final.json`` if present (``[{"train": [...], "val": [...]}]``).
    """

    root: Path
    layout: str
    name: str
    channel_names: tuple[str, ...]
    labels: dict[int, str]
    label_regions: dict[str, tuple[int, ...]]
    cases: tuple[RawCase, ...]
    splits: tuple[dict[str, tuple[str, ...]], ...] | None = None

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]


def read_dataset_json(root: Path) -> dict:
    """``root/dataset.json`` as a dict.

    Raises:
        DatasetFormatError: missing, not JSON, or not an object.
    """
    path = Path(root) / META_FILE
    if not path.is_file():
        raise DatasetFormatError(f"{path}: not found; a dataset in the MSD or nnU-Net v2 layout needs a "
                                 "dataset.json with its channels and labels (see docs/DATA.md; a paper dataset "
                                 "is named: `sam3d prepare synapse|acdc|lung|brats --raw ...`)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DatasetFormatError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def user_layout(meta: dict, path: Path) -> str:
    """``nnunet_v2`` when ``dataset.json`` has ``channel_names``, ``msd`` when it has ``modality``."""
    if "channel_names" in meta:
        return "nnunet_v2"
    if "modality" in meta:
        return "msd"
    raise DatasetFormatError(f"{path}: has neither 'modality' (MSD) nor 'channel_names' (nnU-Net v2); "
                             "cannot tell the channels")


def _channels(meta: dict, key: str, path: Path) -> tuple[str, ...]:
    raw = meta[key]
    if not isinstance(raw, dict) or not raw:
        raise DatasetFormatError(f"{path}: {key!r} must be a non-empty object {{\"0\": \"CT\", ...}}")
    try:
        by_index = {int(k): v for k, v in raw.items()}  # "00" and "0" both mean channel 0
    except ValueError:
        raise DatasetFormatError(f"{path}: {key!r} keys must be channel numbers \"0\", \"1\", ...") from None
    idx = sorted(by_index)
    if len(by_index) != len(raw) or idx != list(range(len(idx))):
        raise DatasetFormatError(f"{path}: {key!r} keys must be 0..{len(raw) - 1}, each once; got {sorted(raw)}")
    return tuple(str(by_index[i]) for i in idx)


def _label_value(v, name, path: Path) -> int:
    """A label value of ``dataset.json``: an integer >= 0, also written as ``"1"``, ``1.0`` or ``"1.0"``."""
    try:
        f = float(v) if not isinstance(v, bool) and isinstance(v, (int, float, str)) else float("nan")
    except ValueError:
        f = float("nan")
    if not (f >= 0 and f.is_integer()):
        raise DatasetFormatError(f"{path}: label {name!r} has value {v!r}; label values must be integers >= 0")
    return int(f)


def _labels(meta: dict, layout: str, path: Path) -> tuple[dict[int, str], dict[str, tuple[int, ...]]]:
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise DatasetFormatError(f"{path}: 'labels' must be a non-empty object")
    labels: dict[int, str] = {}
    regions: dict[str, tuple[int, ...]] = {}
    if layout == "msd":  # {"0": "background", "1": "liver"}
        for k, name in raw.items():
            labels[_label_value(k, name, path)] = str(name)
    else:  # {"background": 0, "liver": 1, "whole tumour": [1, 2]}
        for name, v in raw.items():
            if isinstance(v, list):
                regions[str(name)] = tuple(_label_value(x, name, path) for x in v)
                if len(v) == 1:
                    labels.setdefault(regions[str(name)][0], str(name))
            else:
                labels[_label_value(v, name, path)] = str(name)
        for members in regions.values():  # region-based datasets name only some of the values
            for v in members:
                labels.setdefault(v, f"label {v}")
    values = sorted(labels)
    if 0 not in labels:
        raise DatasetFormatError(f"{path}: 'labels' must declare the background as label 0")
    if values != list(range(len(values))):
        raise DatasetFormatError(f"{path}: label values must be consecutive 0..K-1 (nnU-Net's rule), got {values}")
    if max(values) > 255:
        raise DatasetFormatError(f"{path}: at most 256 labels are supported, got values up to {max(values)}")
    for name, members in regions.items():
        bad = sorted(set(members) - set(values[1:]))
        if bad:
            raise DatasetFormatError(f"{path}: region {name!r} uses label(s) {bad} that are not foreground labels")
    return labels, regions


#: what to do with a problem of one case's files: raise it (default) or collect it (``check-data``)
Report = Callable[[UserInputError], None]


def _raise(exc: UserInputError) -> None:
    raise exc


class UnlistedImageWarning(UserWarning):
    """Images in ``imagesTr`` that the MSD ``dataset.json`` ``training`` list does not name (not prepared)."""


def _warn_unlisted(images_tr: Path, cases: list[RawCase], path: Path) -> None:
    listed = {p.name for c in cases for p in c.images} | {Path(c.extra.get("listed_image", "")).name for c in cases}
    unlisted = sorted(p.name for p in images_tr.iterdir() if nifti_stem(p.name) and not p.name.startswith(".")
                      and p.name not in listed)
    if unlisted:
        warnings.warn(f"{images_tr}: {len(unlisted)} image(s) not listed in {path.name}'s 'training' are left out: "
                      f"{', '.join(unlisted[:5])}{' ...' if len(unlisted) > 5 else ''}", UnlistedImageWarning,
                      stacklevel=3)


def _msd_cases(root: Path, meta: dict, path: Path, report: Report = _raise) -> list[RawCase]:
    entries = meta.get("training")
    if entries is None:  # not listed: every image of imagesTr with its label
        entries = [{"image": f"./imagesTr/{p.name}", "label": f"./labelsTr/{p.name}"}
                   for p in sorted((root / "imagesTr").iterdir()) if nifti_stem(p.name)]
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{path}: 'training' must be a list of {{\"image\": ..., \"label\": ...}}")
    cases = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise DatasetFormatError(f"{path}: training entry {i} must have 'image' and 'label', got {entry!r}")
        ip, lp = root / entry["image"], root / entry["label"]
        stem = nifti_stem(ip.name)
        if stem is None or nifti_stem(lp.name) is None:
            raise DatasetFormatError(f"{path}: training entry {i} ({entry['image']}): only NIfTI (.nii.gz/.nii) "
                                     "files are supported")
        images = channel_files(ip.parent, stem)
        missing = [f for f, ok in ((ip, bool(images)), (lp, lp.is_file())) if not ok]
        for f in missing:
            report(DatasetFormatError(f"{f}: listed in {path} ('training' entry {i}) but missing"))
        if not missing:
            cases.append(RawCase(stem, images, lp, "msd", {"listed_image": str(ip)}))
    if "training" in meta:
        _warn_unlisted(root / "imagesTr", cases, path)
    return cases


def _v2_cases(root: Path, meta: dict, n_channels: int, path: Path, report: Report = _raise) -> list[RawCase]:
    ending = meta.get("file_ending")
    if ending not in NIFTI_SUFFIXES:
        raise DatasetFormatError(f"{path}: 'file_ending' {ending!r} is not supported; use one of "
                                 f"{', '.join(NIFTI_SUFFIXES)} (convert other formats to NIfTI first)")
    found: dict[str, set[int]] = {}
    for p in sorted((root / "imagesTr").iterdir()):
        stem = nifti_stem(p.name) if p.name.endswith(ending) else None
        case_channel = channel_case_id(stem) if stem else None
        if case_channel:
            found.setdefault(case_channel[0], set()).add(case_channel[1])
    cases = []
    for cid in sorted(found):
        want = set(range(n_channels))
        if found[cid] != want:
            missing = sorted(want - found[cid])
            f = root / "imagesTr" / f"{cid}_{(missing or sorted(found[cid] - want))[0]:04d}{ending}"
            what = "missing" if missing else f"not declared ({path.name} has {n_channels} channel(s))"
            report(DatasetFormatError(f"{f}: channel file {what}"))
            continue
        lab = root / "labelsTr" / f"{cid}{ending}"
        if not lab.is_file():
            report(DatasetFormatError(f"{lab}: label of case {cid} (imagesTr/{cid}_0000{ending}) missing"))
            continue
        images = tuple(root / "imagesTr" / f"{cid}_{c:04d}{ending}" for c in range(n_channels))
        cases.append(RawCase(cid, images, lab, "nnunet_v2"))
    n = meta.get("numTraining")
    if n is not None and as_int(n, f"{path}: 'numTraining'", DatasetFormatError) != len(found):
        report(DatasetFormatError(f"{path}: numTraining is {n} but imagesTr holds {len(found)} case(s)"))
    return cases


def _read_splits(root: Path, case_ids: list[str], report: Report = _raise) -> tuple[dict[str, tuple[str, ...]], ...] | None:
    path = root / SPLITS_FILE
    if not path.is_file():
        return None
    try:
        folds = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from None
    try:
        checked = check_folds(folds, case_ids, str(path))
    except UserInputError as exc:
        report(exc)
        return None
    return tuple({k: tuple(v) for k, v in f.items()} for f in checked)


def load_user_dataset(root: str | Path, report: Report = _raise) -> UserDataset:
    """Read ``dataset.json`` and list the cases of a raw MSD or nnU-Net v2 folder.

    ``report`` receives each problem of one case's files (a listed image or label missing, a
    channel file missing or undeclared, ``numTraining`` off); the default raises the first,
    ``sam3d check-data`` collects them all and goes on with the complete cases. Images of an
    MSD ``imagesTr`` that ``training`` does not list give an :class:`UnlistedImageWarning`.

    Raises:
        MissingFileError: ``root`` is not a folder.
        DatasetFormatError: no/invalid ``dataset.json``, no or empty ``imagesTr``, a listed image or
            label missing, a channel file missing or undeclared, bad ``splits_final.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: raw data folder not found")
    meta = read_dataset_json(root)
    path = root / META_FILE
    layout = user_layout(meta, path)
    channels = _channels(meta, "channel_names" if layout == "nnunet_v2" else "modality", path)
    labels, regions = _labels(meta, layout, path)
    images_tr = root / "imagesTr"
    if not images_tr.is_dir() or not any(nifti_stem(p.name) for p in images_tr.iterdir()):
        raise DatasetFormatError(f"{images_tr}: {'empty' if images_tr.is_dir() else 'missing'}; the training "
                                 "images go there")
    cases = (_msd_cases(root, meta, path, report) if layout == "msd"
             else _v2_cases(root, meta, len(channels), path, report))
    if not cases:
        report(DatasetFormatError(f"{path}: no complete training case found"))
    ids = [c.case_id for c in cases]
    dup = sorted({c for c in ids if ids.count(c) > 1})
    if dup:
        raise DatasetFormatError(f"{path}: case id(s) {dup[:5]} listed more than once")
    name = str(meta.get("name") or root.name).strip() or root.name
    return UserDataset(root, layout, name, channels, labels, regions, tuple(sorted(cases, key=lambda c: c.case_id)),
                       _read_splits(root, ids, report))
