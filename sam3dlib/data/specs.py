"""Per-dataset facts (label maps, regions, crop and batch sizes, spacing, normalisation).

Read from the shipped ``resources/datasets.json`` (gathered from the authors' code; every
value there names its source). Where the paper's text and the code that produced its
numbers disagree, the code's value is the default and the text's is kept alongside.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from sam3dlib.utils.errors import ConfigError

DATASETS = ("synapse", "acdc", "lung", "brats")


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset. Sizes are (D, H, W) = (z, y, x)."""

    name: str
    num_channels: int
    num_classes: int
    labels: dict[int, str]
    #: scored regions: name -> label values whose union forms the region (table column order)
    regions: dict[str, tuple[int, ...]]
    patch_size: tuple[int, int, int]
    batch_size: int
    modality: str  # "CT" or "MRI"
    target_spacing: tuple[float, float, float] | None
    #: the paper's text where it differs from the code (e.g. ACDC depth 14)
    paper_text_patch_size: tuple[int, int, int] | None = None
    #: extra regions the original scripts compute but the table does not show
    extra_regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ct_stats: dict[str, float] | None = None

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.labels))


@lru_cache(maxsize=None)
def _facts() -> dict:
    return json.loads(resources.files("sam3dlib.resources").joinpath("datasets.json").read_text())


def _int_keys(d: dict) -> dict[int, str]:
    return {int(k): v for k, v in d.items()}


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``synapse``, ``acdc``, ``lung`` or ``brats``."""
    key = name.lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    f = _facts()[key]
    labels = _int_keys(f["labels"])
    modality = f["modality"]["0"] if f["num_channels"] == 1 else "MRI"
    spacing = tuple(f["target_spacing_zyx"]) if f.get("target_spacing_zyx") else None
    stats = (f["intensity_normalization"].get("values_if_known") or None) if modality == "CT" else None
    if key == "synapse":
        order = ("RKid", "LKid", "Spl", "Gal", "Sto", "Pan", "Aor", "Liv")  # Table 1 column order
        regions = {r: (f["evaluated_labels"][r],) for r in order}
        return DatasetSpec(key, 1, 14, labels, regions, (64, 176, 176), 2, "CT", spacing, ct_stats=stats)
    if key == "acdc":
        regions = {"RV": (1,), "MYO": (2,), "LV": (3,)}
        return DatasetSpec(key, 1, 4, labels, regions, (16, 160, 160), 4, "MRI", spacing, paper_text_patch_size=(14, 160, 160))
    if key == "lung":
        return DatasetSpec(key, 1, 2, labels, {"tumour": (1,)}, (34, 192, 192), 2, "CT", spacing, ct_stats=stats)
    regions = {"WT": (1, 2, 3), "ET": (3,), "TC": (2, 3)}  # Table 4 column order
    extra = {"ED": (1,), "NET": (2,)}
    return DatasetSpec(key, 4, 4, labels, regions, (64, 64, 64), 2, "MRI", spacing, extra_regions=extra)
