"""What a reproduction needs before any work: the prepared datasets and the encoder weights file.

:func:`check_inputs` stops ``sam3d reproduce`` / ``make reproduce-tableN`` with one message
listing every missing file or folder and how to get it (the paper's data sources, the official
weights file's address).
"""
from __future__ import annotations

import os
from pathlib import Path

from sam3dlib.modeling.encoders.sam_vit import OFFICIAL_CHECKPOINTS, OFFICIAL_URL_BASE
from sam3dlib.study.registry import table_datasets, table_key
from sam3dlib.utils.errors import UserInputError
from sam3dlib.utils.shell import shell_command

ENCODER_WEIGHTS_URL = OFFICIAL_URL_BASE + OFFICIAL_CHECKPOINTS["vit_b"]
#: Where ``make``/``sam3d demo``/``sam3d reproduce`` look for the official SAM ViT-B weights.
DEFAULT_ENCODER_WEIGHTS = Path("checkpoints/sam_vit_b_01ec64.pth")

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
    """Data or encoder weights needed by a reproduction are missing; the message says how to get it."""


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


def missing_weights_message(encoder_weights: str | os.PathLike | None, profile: str) -> str:
    """How to download the official ViT-B weights to ``encoder_weights`` (default :data:`DEFAULT_ENCODER_WEIGHTS`)."""
    target = Path(encoder_weights or DEFAULT_ENCODER_WEIGHTS)
    return (
        f"missing encoder weights file {encoder_weights} (profile {profile!r} needs the official ViT-B weights).\n"
        f"    Download it: {shell_command('sam3d', 'download', 'sam-vit-b', '--to', target.parent)} (md5-verified; from "
        f"{ENCODER_WEIGHTS_URL})\n"
        f"    (or pass another file with ENCODER_WEIGHTS=... / --encoder-weights, or use PROFILE=smoke for the "
        "stand-in encoder)"
    )


def check_inputs(table: int | str, profile: str, data_dir: str | os.PathLike | None,
                 encoder_weights: str | os.PathLike | None) -> None:
    """Stop before any work when the table's data or the encoder weights file is missing.

    Args:
        table: paper table (1-5).
        profile: ``paper``/``quick`` need ``encoder_weights``; ``smoke`` uses the stand-in encoder.
        data_dir: folder holding ``<dataset>/dataset.json`` prepared stores; None = phantoms (no check).
        encoder_weights: the official SAM ViT-B file.

    Raises:
        MissingInputError: listing every missing file or folder and how to get it.
    """
    problems = []
    if data_dir is not None:
        problems += [missing_data_message(ds, Path(data_dir), profile) for ds in table_datasets(table) if not has_store(data_dir, ds)]
    if profile != "smoke" and (encoder_weights is None or not Path(encoder_weights).is_file()):
        problems.append(missing_weights_message(encoder_weights, profile))
    if problems:
        key = table_key(table)
        hint = ""
        if data_dir is not None and any(not has_store(data_dir, ds) for ds in table_datasets(table)):
            hint = (f"\n  Or run on the built-in phantoms directly (a stand-in): make reproduce-table{key} PROFILE=smoke "
                    f"PHANTOMS=1 (sam3d reproduce {key} --profile smoke --phantoms)")
        raise MissingInputError(f"cannot reproduce Table {key}:\n  - " + "\n  - ".join(problems) + hint)


__all__ = ["DATA_SOURCES", "DEFAULT_ENCODER_WEIGHTS", "ENCODER_WEIGHTS_URL", "MissingInputError", "check_inputs",
           "has_store", "missing_data_message"]
