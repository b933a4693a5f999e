"""Finding the cases of a dataset in its distributed (raw) layout or an nnU-Net v1 preprocessed folder.

Layouts (autodetected by :func:`detect_layout`):

* ``btcv``: Synapse/BTCV ``img/imgNNNN.nii.gz`` + ``label/labelNNNN.nii.gz`` (also under
  ``Training/`` or ``RawData/Training/``);
* ``acdc``: ``patientPPP/patientPPP_frameFF.nii.gz`` + ``patientPPP_frameFF_gt.nii.gz`` (the root may
  hold ``training/``/``testing/``); ``*_4d.nii.gz`` is ignored;
* ``msd``: Medical Segmentation Decathlon / nnFormer task folder ``imagesTr/``, ``labelsTr/``,
  ``dataset.json`` (plus nnFormer's ``imagesTs/``+``labelsTs/``); images either one (possibly 4D,
  modality last) file per case or nnU-Net ``_0000``-style channel files;
* ``nnunet_v1``: an nnU-Net v1 preprocessed task (``*_stageN/<id>.npz|.npy`` + ``<id>.pkl``,
  plans ``*.pkl``, ``splits_final.pkl``) as UNETR++/nnFormer/SAM3D users have it.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

from sam3dlib.data.io import NIFTI_SUFFIXES, DataFileError, channel_case_id
from sam3dlib.data.io import nifti_stem as _nii
from sam3dlib.data.safe_pickle import safe_load_pickle
from sam3dlib.utils.errors import ConfigError, MissingFileError
from sam3dlib.utils.fileio import read_json

LAYOUTS = ("btcv", "acdc", "msd", "nnunet_v1")


@dataclass(frozen=True)
class RawCase:
    """One case found on disk. For ``nnunet_v1`` ``images`` holds the ``.npz``/``.npy`` file and
    ``label`` is ``None`` (the segmentation is the array's last channel); ``extra`` has the ``.pkl``."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    layout: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _btcv_root(root: Path) -> Path | None:
    for cand in (root, root / "Training", root / "RawData" / "Training", root / "Abdomen" / "RawData" / "Training"):
        if (cand / "img").is_dir():
            return cand
    return None


def _acdc_root(root: Path) -> list[Path]:
    roots = [d for d in (root, root / "training", root / "testing", root / "database" / "training",
                         root / "database" / "testing") if d.is_dir() and any(d.glob("patient*/"))]
    return roots


def _nnunet_stage_dir(root: Path) -> Path | None:
    def is_stage(d: Path) -> bool:
        return any(d.glob("*.pkl")) and (any(d.glob("*.npz")) or any(d.glob("*.npy")))
    if is_stage(root):
        return root
    stages = [d for d in root.glob("*_stage*") if d.is_dir() and is_stage(d)]
    if not stages:
        return None
    return max(stages, key=lambda d: int(re.search(r"_stage(\d+)$", d.name).group(1))
               if re.search(r"_stage(\d+)$", d.name) else -1)


def detect_layout(raw_root: Path) -> str:
    """Which of :data:`LAYOUTS` ``raw_root`` is in.

    Raises:
        FileNotFoundError: the folder does not exist or matches no known layout.
    """
    root = Path(raw_root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: raw data folder not found")
    if (root / "imagesTr").is_dir():
        return "msd"
    if _btcv_root(root) is not None:
        return "btcv"
    if _acdc_root(root):
        return "acdc"
    if _nnunet_stage_dir(root) is not None:
        return "nnunet_v1"
    raise MissingFileError(
        f"{root}: no known layout (expected img/+label/ (BTCV), patientNNN/ folders (ACDC), "
        "imagesTr/+labelsTr/+dataset.json (MSD/nnFormer) or an nnU-Net v1 *_stageN folder with .npz/.pkl)")


def _find_btcv(root: Path) -> list[RawCase]:
    base = _btcv_root(root)
    cases = []
    for p in sorted((base / "img").iterdir()):
        stem = _nii(p.name)
        if stem is None or not stem.startswith("img"):
            continue
        num = stem[3:]
        lab = next((base / "label" / f"label{num}{e}" for e in NIFTI_SUFFIXES
                    if (base / "label" / f"label{num}{e}").exists()), None)
        cases.append(RawCase(stem, (p,), lab, "btcv"))
    return cases


def _find_acdc(root: Path) -> list[RawCase]:
    cases = []
    for base in _acdc_root(root):
        for pdir in sorted(base.glob("patient*/")):
            for p in sorted(pdir.iterdir()):
                stem = _nii(p.name)
                if stem is None or not re.fullmatch(r"patient\d+_frame\d+", stem):
                    continue
                lab = next((pdir / f"{stem}_gt{e}" for e in NIFTI_SUFFIXES if (pdir / f"{stem}_gt{e}").exists()), None)
                cases.append(RawCase(stem, (p,), lab, "acdc"))
    return cases


def channel_files(folder: Path, stem: str) -> tuple[Path, ...]:
    """``stem.nii.gz`` or the nnU-Net channel files ``stem_0000.nii.gz``, ``stem_0001.nii.gz`` ..."""
    for e in NIFTI_SUFFIXES:
        if (folder / f"{stem}{e}").is_file():
            return (folder / f"{stem}{e}",)
    chans = sorted(p for p in folder.glob(f"{stem}_[0-9][0-9][0-9][0-9].nii*") if _nii(p.name))
    return tuple(chans)


def _label_for(folder: Path, stem: str) -> Path | None:
    names = [stem, f"{stem}_gt", re.sub(r"^img", "label", stem)]
    for n in names:
        for e in NIFTI_SUFFIXES:
            path = folder / f"{n}{e}"
            if path.is_file() or path.is_symlink():  # a dangling link is kept: reading it names it
                return path
    return None


def _listed_image(entry: object, where: str) -> str:
    """The image path of one MSD ``dataset.json`` training entry: a path, or an object with
    ``"image"`` (Medical Segmentation Decathlon layout); DataFileError naming ``where`` otherwise."""
    image = entry.get("image") if isinstance(entry, dict) else entry
    label = entry.get("label") if isinstance(entry, dict) else None
    if not isinstance(image, str) or not image or not isinstance(label, (str, type(None))):
        raise DataFileError(f"{where}: expected {{\"image\": \"./imagesTr/....nii.gz\", \"label\": ...}}, got {entry!r}")
    return image


def _find_msd(root: Path) -> list[RawCase]:
    cases: dict[str, RawCase] = {}
    meta_path = root / "dataset.json"
    if meta_path.is_file():
        meta = read_json(meta_path, DataFileError, expect=dict)
        training = meta.get("training", [])
        if not isinstance(training, list):
            raise DataFileError(f"{meta_path}: 'training' must be a list of {{\"image\": ..., \"label\": ...}}")
        for i, entry in enumerate(training):
            img_rel = _listed_image(entry, f"{meta_path}: training entry {i}")
            ip = (root / img_rel).resolve() if not Path(img_rel).is_absolute() else Path(img_rel)
            stem = _nii(ip.name)
            if stem is None:
                continue
            imgs = channel_files(ip.parent, stem)
            lab = None
            if isinstance(entry, dict) and entry.get("label"):
                lp = root / entry["label"]
                lab = lp if lp.is_file() or lp.is_symlink() else None
            extra = {"listed_image": str(ip), "listed_label": str(root / entry["label"]) if isinstance(entry, dict)
                     and entry.get("label") else None}
            cases[stem] = RawCase(stem, imgs, lab, "msd", extra)
    for img_dir, lab_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        if not (root / img_dir).is_dir() or (img_dir == "imagesTs" and not (root / lab_dir).is_dir()):
            continue
        stems = set()
        for p in (root / img_dir).iterdir():
            stem = _nii(p.name)
            if stem is None:
                continue
            base = (channel_case_id(stem) or (stem,))[0]
            direct = (root / img_dir / f"{base}.nii.gz").exists() or (root / img_dir / f"{base}.nii").exists()
            stems.add(base if base != stem and not direct else stem)
        for stem in sorted(stems):
            if stem in cases and cases[stem].images:
                continue
            cases[stem] = RawCase(stem, channel_files(root / img_dir, stem), _label_for(root / lab_dir, stem), "msd")
    return [cases[k] for k in sorted(cases)]


def _find_nnunet_v1(root: Path) -> list[RawCase]:
    stage = _nnunet_stage_dir(root)
    cases = []
    for pkl in sorted(stage.glob("*.pkl")):
        cid = pkl.stem
        arr = stage / f"{cid}.npy" if (stage / f"{cid}.npy").is_file() else stage / f"{cid}.npz"
        if not arr.is_file():
            continue
        cases.append(RawCase(cid, (arr,), None, "nnunet_v1", {"properties": str(pkl), "stage_dir": str(stage)}))
    return cases


def find_raw_cases(dataset: str, raw_root: Path, layout: str | None = None) -> list[RawCase]:
    """All cases under ``raw_root`` (sorted by id), in the autodetected or given ``layout``.

    ``dataset`` is used only for messages; label/channel checks are done by ``prepare``/``check``.
    """
    root = Path(raw_root)
    layout = layout or detect_layout(root)
    finder = {"btcv": _find_btcv, "acdc": _find_acdc, "msd": _find_msd, "nnunet_v1": _find_nnunet_v1}.get(layout)
    if finder is None:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    cases = finder(root)
    if not cases:
        raise MissingFileError(f"{root}: no {dataset} cases found in the {layout} layout")
    return cases


# ---------------------------------------------------------------- nnU-Net v1 preprocessed files


def load_pickle(path: Path):
    """Read an nnU-Net v1 ``.pkl`` with the restricted unpickler (plain data types only)."""
    try:
        return safe_load_pickle(path)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError) as exc:
        raise DataFileError(f"{path}: cannot read pickle ({type(exc).__name__}: {exc})") from exc


def nnunet_v1_plans(stage_dir: Path) -> dict | None:
    """The plans dict next to a stage folder (``*plans*3D.pkl``), or None."""
    cands = sorted(Path(stage_dir).parent.glob("*plans*3D*.pkl")) or sorted(Path(stage_dir).parent.glob("*lans*.pkl"))
    return load_pickle(cands[-1]) if cands else None


def nnunet_v1_splits(stage_dir: Path) -> list | None:
    """``splits_final.pkl`` of the task (list of folds with ``train``/``val``), or None."""
    p = Path(stage_dir).parent / "splits_final.pkl"
    return load_pickle(p) if p.is_file() else None
