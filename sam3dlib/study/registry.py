"""The experiment registry: which configuration reproduces which paper table, and how.

One place for the facts that name the paper's experiments:

* :data:`EXPERIMENTS`: each configuration (``table1_synapse`` ...), its dataset, its table and
  whether the decoder has skip connections; :func:`get_config` turns one into an
  :class:`~sam3dlib.config.ExperimentConfig` (dataset values, then a budget profile, then overrides).
* :func:`sam3dlib.config.store_config`: the ``custom`` experiment of any prepared store (spec from its plan).
* :data:`TABLES`: each paper table's rows of ours (Table 5 = 5a ACDC and 5b Synapse, with and
  without skip connections) and the paper's method each row reproduces.
* :data:`NOTEBOOKS`: the notebook that regenerates each table (``sam3d reproduce N``).

Examples::

    >>> get_config("table2_acdc", "paper", patch_size=(14, 160, 160)).batch_size
    4
    >>> [row.config for row in experiments("5a")]
    ['table2_acdc', 'table5_acdc_noskip']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sam3dlib.config import (
    CUSTOM,
    ExperimentConfig,
    check_overrides,
    dataset_values,
    did_you_mean,
    fit_crop,
    profile_values,
)
from sam3dlib.data.specs import get_spec
from sam3dlib.utils.errors import ConfigError


@dataclass(frozen=True)
class Experiment:
    """One configuration of the paper: ``dataset`` trained with the paper's decoder (or without skips)."""

    table: str
    dataset: str
    skip: bool = True
    description: str = ""


EXPERIMENTS: dict[str, Experiment] = {
    "table1_synapse": Experiment("1", "synapse", description="Synapse multi-organ CT, 8 organs"),
    "table2_acdc": Experiment("2", "acdc", description="ACDC cardiac MRI, RV/MYO/LV"),
    "table3_lung": Experiment("3", "lung", description="MSD Lung tumour CT"),
    "table4_brats": Experiment("4", "brats", description="MSD BraTS, WT/ET/TC"),
    "table5_synapse_noskip": Experiment("5", "synapse", skip=False, description="Table 5b: no skip connections"),
    "table5_acdc_noskip": Experiment("5", "acdc", skip=False, description="Table 5a: no skip connections"),
}



@dataclass(frozen=True)
class TableInfo:
    """One row of ours in a paper table: the configuration and the paper's method it reproduces."""

    table: str
    config: str
    paper_method: str

    @property
    def dataset(self) -> str:
        return EXPERIMENTS[self.config].dataset

    @property
    def skip(self) -> bool:
        return EXPERIMENTS[self.config].skip


#: Paper table -> our experiments. Table 5 is two sub-tables with two variants each.
TABLES: dict[str, tuple[TableInfo, ...]] = {
    "1": (TableInfo("1", "table1_synapse", "SAM3D"),),
    "2": (TableInfo("2", "table2_acdc", "SAM3D"),),
    "3": (TableInfo("3", "table3_lung", "SAM3D"),),
    "4": (TableInfo("4", "table4_brats", "SAM3D"),),
    "5": (
        TableInfo("5a", "table2_acdc", "SAM3D w skip connection"),
        TableInfo("5a", "table5_acdc_noskip", "SAM3D w/o skip connection"),
        TableInfo("5b", "table1_synapse", "SAM3D w skip connection"),
        TableInfo("5b", "table5_synapse_noskip", "SAM3D w/o skip connection"),
    ),
}
SUBTABLES = ("5a", "5b")

#: Table -> the notebook that regenerates it (``notebooks/``, found by ``sam3dlib.study.reproduce.notebooks_dir``).
NOTEBOOKS = {
    "1": "01_synapse_table1.ipynb",
    "2": "02_acdc_table2.ipynb",
    "3": "03_lung_table3.ipynb",
    "4": "04_brats_table4.ipynb",
    "5": "05_skip_ablation_table5.ipynb",
}


def table_key(table: int | str) -> str:
    """Normalise a table name: ``1`` -> ``"1"``; ``"table5a"`` -> ``"5a"``.

    Raises:
        ConfigError: an unknown table.
    """
    key = str(table).strip().lower()
    if key.startswith("table"):
        key = key[5:]
    if key not in TABLES and key not in SUBTABLES:
        raise ConfigError(f"unknown paper table {table!r}; choose one of 1, 2, 3, 4, 5 (5a, 5b)")
    return key


def experiments(table: int | str) -> tuple[TableInfo, ...]:
    """The rows of ours (one per dataset x variant) that reproduce paper table ``table``."""
    key = table_key(table)
    if key in TABLES:
        return TABLES[key]
    return tuple(t for t in TABLES["5"] if t.table == key)


def table_datasets(table: int | str) -> list[str]:
    """Datasets a table needs, in order (Table 5: acdc, synapse)."""
    return list(dict.fromkeys(row.dataset for row in experiments(table)))


def get_config(name: str, profile: str = "smoke", **overrides: Any) -> ExperimentConfig:
    """The configuration of one paper experiment.

    Args:
        name: a key of :data:`EXPERIMENTS` (``table1_synapse``, ``table2_acdc``, ``table3_lung``,
            ``table4_brats``, ``table5_synapse_noskip``, ``table5_acdc_noskip``).
        profile: ``paper``, ``quick`` or ``smoke`` (:func:`sam3dlib.config.profile_values`).
        **overrides: any :class:`~sam3dlib.config.ExperimentConfig` field but the fixed ones.

    Raises:
        ConfigError: unknown name/profile/setting, or a value of the wrong type (a ``ValueError``).

    Examples::

        >>> cfg = get_config("table2_acdc", "paper", patch_size=(14, 160, 160))  # paper's text
    """
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}{did_you_mean(name, EXPERIMENTS)}; "
                          f"choose one of {', '.join(EXPERIMENTS)}")
    entry = EXPERIMENTS[name]
    checked = check_overrides(name, overrides)
    values = fit_crop({**dataset_values(get_spec(entry.dataset), entry.skip), **profile_values(profile), **checked},
                      checked)
    return ExperimentConfig(name=name, table=entry.table, dataset=entry.dataset, profile=profile, **values)


__all__ = ["CUSTOM", "EXPERIMENTS", "NOTEBOOKS", "TABLES", "Experiment", "TableInfo", "dataset_values",
           "experiments", "get_config", "table_datasets", "table_key"]
