"""``sam3d download``: what the paper needs that is openly downloadable, verified; one line for the rest.

* ``sam-vit-b``/``-l``/``-h``: the official Segment Anything checkpoints from their official
  address, checked against their md5 (:data:`sam3dlib.modeling.encoders.sam_vit.OFFICIAL_MD5`).
* ``lung``/``brats``: the Medical Segmentation Decathlon's Task06_Lung / Task01_BrainTumour
  from MONAI's own resource and md5 tables (``monai.apps.DecathlonDataset``), extracted with
  ``monai.apps.download_and_extract`` once verified.
* ``synapse``, ``acdc`` (registration) and the authors' Drive files (``authors-weights``,
  ``authors-predictions``, ``authors-data``: a browser) cannot be fetched by a program: one line
  says where to get them and where to put them.

Each verified file's sha256 is recorded on first use in ``<DIR>/downloads.json``; a later
check of the same file must match it. Transfers resume; nothing unverified is kept under the
file's name (:mod:`sam3dlib.utils.download`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sam3dlib.modeling.encoders.sam_vit import OFFICIAL_CHECKPOINTS, OFFICIAL_MD5, OFFICIAL_URL_BASE
from sam3dlib.utils.download import DownloadError, download, install_file
from sam3dlib.utils.errors import UserInputError
from sam3dlib.utils.fileio import atomic_write_json

RECORD = "downloads.json"
#: MSD tasks of the paper's datasets (names of MONAI's tables).
MSD_TASKS = {"lung": "Task06_Lung", "brats": "Task01_BrainTumour"}
#: The authors' README links (Google Drive: a browser is needed), per dataset.
AUTHORS_DRIVE = {
    "weights": {"synapse": "https://drive.google.com/file/d/1jxWSlK1Zy_gBY_XO3xh6ydaLthqDh5Tm",
                "acdc": "https://drive.google.com/file/d/1a4fWzwEC9jKBKcZ_kj9wsrtoL8Ha1qpx",
                "brats": "https://drive.google.com/file/d/1ws73ZuxY9fmCcPPE_q9HS4sYHa0symXJ",
                "lung": "https://drive.google.com/file/d/1jraG6uXrXEUyj-tFOMiEIGoDxDJeTQ_X"},
    "predictions": {"synapse": "https://drive.google.com/file/d/1Eb2o2b4TGNUyFpvdCQo3RRcxd2vB5J3x",
                    "acdc": "https://drive.google.com/file/d/19vVWDRnhSGFxFVcIzgF0LyJOyVGOs1UU",
                    "brats": "https://drive.google.com/file/d/1tTbhgaBOcQ8Ww_rSCFvOyReDCaUcjue1",
                    "lung": "https://drive.google.com/file/d/1LqM0ZVwk6RLzqEodVACzTBZUAtNPdFT5"},
    "data": {"all": "https://drive.google.com/drive/folders/1N8FAxEH0QExkqQbPT2oy2DrzUfIaRDMx"},
}
MANUAL = {
    "synapse": "Synapse needs a registered account: download RawData.zip of https://www.synapse.org/#!Synapse:syn3193805 "
               "in a browser, unzip it to {to}/synapse/, then sam3d prepare synapse --raw {to}/synapse/RawData/Training "
               "--out data/synapse",
    "acdc": "ACDC needs a registration form: download the training set from "
            "https://www.creatis.insa-lyon.fr/Challenge/acdc/ in a browser, unzip it to {to}/acdc/, then "
            "sam3d prepare acdc --raw {to}/acdc/training --out data/acdc",
    "authors-weights": "The authors' trained models are Google Drive files (a browser is needed): "
                       + ", ".join(f"{k} {v}" for k, v in AUTHORS_DRIVE["weights"].items())
                       + "; put each at {to}/<dataset>/weights.zip, then sam3d import-released <dataset> "
                       "--weights {to}/<dataset>/weights.zip --out runs/released_<dataset> (or RELEASED_WEIGHTS=)",
    "authors-predictions": "The authors' prediction maps are Google Drive files (a browser is needed): "
                           + ", ".join(f"{k} {v}" for k, v in AUTHORS_DRIVE["predictions"].items())
                           + "; unzip each to {to}/<dataset>/predictions/, then make reproduce-tableN "
                           "RELEASED_PREDICTIONS={to}/<dataset>/predictions",
    "authors-data": "The authors' preprocessed data is a Google Drive folder (a browser is needed): "
                    + AUTHORS_DRIVE["data"]["all"] + "; put it under {to}/data/",
}
SAM_ITEMS = {f"sam-{vit.replace('_', '-')}": vit for vit in OFFICIAL_CHECKPOINTS}
ITEMS = (*SAM_ITEMS, *MSD_TASKS, *MANUAL)


class ManualDownloadError(UserInputError, OSError):
    """What cannot be fetched by a program: the message says where to get it and where to put it."""


@dataclass(frozen=True)
class Source:
    """One downloadable file: its address, file name and md5."""

    url: str
    filename: str
    md5: str


def msd_source(dataset: str) -> Source:
    """The MSD task's address and md5 from MONAI's own tables (never re-typed here)."""
    from monai.apps import DecathlonDataset

    task = MSD_TASKS[dataset]
    return Source(DecathlonDataset.resource[task], f"{task}.tar", DecathlonDataset.md5[task])


def sam_source(vit: str) -> Source:
    name = OFFICIAL_CHECKPOINTS[vit]
    return Source(OFFICIAL_URL_BASE + name, name, OFFICIAL_MD5[vit])


def source_of(item: str) -> Source:
    """The source of a downloadable item; ManualDownloadError for those a person must fetch."""
    if item in SAM_ITEMS:
        return sam_source(SAM_ITEMS[item])
    if item in MSD_TASKS:
        return msd_source(item)
    raise KeyError(item)


def default_dir(item: str) -> Path:
    """Where an item goes without ``--to``: checkpoints/, released/ (the authors' files) or raw/."""
    if item in SAM_ITEMS:
        return Path("checkpoints")
    return Path("released") if item.startswith("authors-") else Path("raw")


def _recorded(folder: Path) -> dict:
    from sam3dlib.utils.fileio import read_json

    path = folder / RECORD
    return read_json(path, DownloadError, expect=dict) if path.is_file() else {}


def _record(folder: Path, src: Source, got: dict[str, str], how: str) -> None:
    """Remember the verified file's sha256 (first use), refusing a file whose sha256 differs from it."""
    rec = _recorded(folder)
    old = rec.get(src.filename)
    if old and old.get("sha256") != got["sha256"]:
        raise DownloadError(f"{folder / src.filename}: sha256 {got['sha256']} differs from the one recorded on first "
                            f"use ({old['sha256']}) in {folder / RECORD}")
    if not old:
        rec[src.filename] = {"url": src.url, "md5": got["md5"], "sha256": got["sha256"], "source": how}
        atomic_write_json(folder / RECORD, rec)


def fetch(item: str, to: str | os.PathLike | None = None, from_file: str | os.PathLike | None = None,
          progress: Callable[[int, int | None], None] | None = None, source: Source | None = None) -> tuple[Path, str]:
    """Download (or install ``from_file``) one item into ``to``; return ``(path, one line on what it is)``.

    Raises:
        ManualDownloadError: the item needs a person (registration, a browser): the line says what to do.
        DownloadError: the transfer failed (resumable) or the file did not verify (nothing kept).
    """
    if item not in ITEMS:
        raise UserInputError(f"unknown item {item!r}; choose one of {', '.join(ITEMS)}")
    folder = Path(to) if to is not None else default_dir(item)
    if item in MANUAL:
        raise ManualDownloadError(MANUAL[item].format(to=os.fspath(folder)))
    src = source or source_of(item)
    target = folder / src.filename
    if from_file is not None:
        got, how = install_file(from_file, target, md5=src.md5), f"--from {Path(from_file).name}"
    else:
        got, how = download(src.url, target, md5=src.md5, progress=progress), src.url
    _record(folder, src, got, how)
    if item in MSD_TASKS:
        extract_msd(src, target, folder)
        return folder / MSD_TASKS[item], f"{MSD_TASKS[item]} (md5 {got['md5']} verified, sha256 {got['sha256']})"
    return target, f"{src.filename} (official md5 {got['md5']} verified, sha256 {got['sha256']})"


def extract_msd(src: Source, tar: Path, folder: Path) -> None:
    """Extract a verified MSD tar with MONAI's ``download_and_extract`` (the file is there: no transfer)."""
    from monai.apps import download_and_extract

    download_and_extract(src.url, filepath=os.fspath(tar), output_dir=os.fspath(folder), hash_val=src.md5,
                         hash_type="md5", progress=False)


__all__ = ["ITEMS", "MANUAL", "MSD_TASKS", "ManualDownloadError", "Source", "fetch", "msd_source", "sam_source"]
