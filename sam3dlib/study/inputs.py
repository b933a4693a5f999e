"""What a reproduction needs before any work: the prepared datasets and the SAM checkpoint.

:func:`check_inputs` stops ``sam3d reproduce`` / ``make reproduce-tableN`` with one message
listing every missing file or folder and how to get it (the paper's data sources, the official
checkpoint's address).
"""
from __future__ import annotations

import os
from pathlib import Path

from sam3dlib.modeling.encoders.sam_vit import OFFICIAL_CHECKPOINTS, OFFICIAL_URL_BASE
from sam3dlib.study.registry import table_datasets, table_key
from sam3dlib.utils.errors import UserInputError
from sam3dlib.utils.shell import shell_command

CHECKPOINT_URL = OFFICIAL_URL_BASE + OFFICIAL_CHECKPOINTS["vit_b"]
#: Where ``make``/``sam3d demo``/``sam3d reproduce`` look for the official SAM ViT-B weights.
DEFAULT_CHECKPOINT = Path("checkpoints/sam_vit_b_01ec64.pth")

#: Where each dataset comes from (the paper's sources) and the raw folder ``sam3d prepare`` reads.
DATA_SOURCES: dict[str, tuple[str, str]] = {
    "synapse": (
        "Synapse multi-organ CT (MICCAI 2015 Multi-Atlas Abdomen Labeling / BTCV)",
        "https://www.synapse.org/#!Synapse:syn3193805 (register, download RawData: img/ and label/)",
    ),
    "acdc": (
        "ACDC cardiac cine-MRI (MICCAI 2017 challenge)",
        "https://www.creatis.insa-lyon.fr/Challenge/acdc/ (training/patientNNN folders)",
    ),
    "lung": ("Medical Segmentation Decathlon Task06_Lung", "http://medicaldecathlon.com/ (Task06_Lung.tar)"),
    "brats": ("Medical Segmentation Decathlon Task01_BrainTumour", "http://medicaldecathlon.com/ (Task01_BrainTumour.tar)"),
}


class MissingInputError(UserInputError, FileNotFoundError):
    """Data or checkpoint needed by a reproduction is missing; the message says how to get it."""


def has_store(data_dir: str | os.PathLike, dataset: str) -> bool:
    """Whether ``<data_dir>/<dataset>/dataset.json`` (a prepared store) exists."""
    return (Path(data_dir) / dataset / "dataset.json").is_file()


def missing_data_message(dataset: str, data_dir: Path, profile: str | None = None) -> str:
    """How to get and prepare ``dataset`` into ``<data_dir>/<dataset>`` (or try phantoms, of the size
    the ``profile`` uses: :func:`~sam3dlib.study.phantom_data.phantom_size_for`)."""
    from sam3dlib.study.phantom_data import phantom_size_for

    store = Path(data_dir) / dataset
    name, url = DATA_SOURCES[dataset]
    size = " --size tiny" if profile is not None and phantom_size_for(profile) == "tiny" else ""
    return (
        f"missing prepared dataset folder {store} (no {store / 'dataset.json'}).\n"
        f"    Get {name} from {url},\n"
        f"    then run: {shell_command('sam3d', 'prepare', dataset, '--raw', f'/path/to/raw/{dataset}', '--out', store)}\n"
        f"    (to try the pipeline without the data: "
        f"{shell_command('sam3d', 'phantom', dataset, *size.split(), '--out', f'phantoms/{dataset}')} && "
        f"{shell_command('sam3d', 'prepare', dataset, '--raw', f'phantoms/{dataset}', '--out', store)}; a broken "
        f"store is rebuilt by adding --force, or make prepare-{dataset} RAW=... FORCE=1)"
    )


def missing_checkpoint_message(checkpoint: str | os.PathLike | None, profile: str) -> str:
    """How to download the official ViT-B weights to ``checkpoint`` (default :data:`DEFAULT_CHECKPOINT`)."""
    target = Path(checkpoint or DEFAULT_CHECKPOINT)
    return (
        f"missing SAM checkpoint file {checkpoint} (profile {profile!r} needs the official ViT-B weights).\n"
        f"    Download it: {shell_command('sam3d', 'download', 'sam-vit-b', '--to', target.parent)} (md5-verified; from "
        f"{CHECKPOINT_URL})\n"
        f"    (or pass another file with SAM_CHECKPOINT=..., or use PROFILE=smoke for the stand-in encoder)"
    )


def check_inputs(table: int | str, profile: str, data_dir: str | os.PathLike | None,
                 checkpoint: str | os.PathLike | None) -> None:
    """Stop before any work when the table's data or the SAM checkpoint is missing.

    Args:
        table: paper table (1-5).
        profile: ``paper``/``quick`` need ``checkpoint``; ``smoke`` uses the stand-in encoder.
        data_dir: folder holding ``<dataset>/dataset.json`` prepared stores; None = phantoms (no check).
        checkpoint: the official SAM ViT-B file.

    Raises:
        MissingInputError: listing every missing file or folder and how to get it.
    """
    problems = []
    if data_dir is not None:
        problems += [missing_data_message(ds, Path(data_dir), profile) for ds in table_datasets(table) if not has_store(data_dir, ds)]
    if profile != "smoke" and (checkpoint is None or not Path(checkpoint).is_file()):
        problems.append(missing_checkpoint_message(checkpoint, profile))
    if problems:
        key = table_key(table)
        hint = ""
        if data_dir is not None and any(not has_store(data_dir, ds) for ds in table_datasets(table)):
            hint = (f"\n  Or run on the built-in phantoms directly (a stand-in): make reproduce-table{key} PROFILE=smoke "
                    f"PHANTOMS=1 (sam3d reproduce {key} --profile smoke --phantoms)")
        raise MissingInputError(f"cannot reproduce Table {key}:\n  - " + "\n  - ".join(problems) + hint)


__all__ = ["CHECKPOINT_URL", "DATA_SOURCES", "DEFAULT_CHECKPOINT", "MissingInputError", "check_inputs",
           "has_store", "missing_data_message"]
