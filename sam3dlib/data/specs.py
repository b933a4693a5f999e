"""Per-dataset facts (label maps, regions, crop and batch sizes, spacing, normalisation).

One :class:`DatasetSpec` type for every dataset:

* the paper's four (``synapse``, ``acdc``, ``lung``, ``brats``) are read from the shipped
  ``resources/datasets.json`` (gathered from the authors' code; every value there names its
  source; the ``sam3dlib_spec`` block of each entry holds the scored regions, batch size and
  batch-Dice flag). Where the paper's text and the code that produced its numbers disagree,
  the code's value is the default and the text's is kept alongside;
* a user's dataset gets its spec from the planner (:mod:`sam3dlib.data.planning`).

Every prepared store carries its spec as the plan in its ``dataset.json``
(:mod:`sam3dlib.data.plans` reads it; the paper's four have committed plans built from
``datasets.json``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from sam3dlib.utils.errors import ConfigError

DATASETS = ("synapse", "acdc", "lung", "brats")
#: key of the spec block (the plan) in a prepared store's ``dataset.json``
PLAN_KEY = "plan"
#: where a store's split comes from: the paper's shipped lists, or the store's ``splits_final.json``
SPLIT_SOURCES = ("shipped", "folds")
#: HD95 units a dataset's test scores report (:func:`sam3dlib.evaluation.evaluator.evaluate_pairs`)
HD95_CONVENTIONS = ("paper", "both")


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset. Sizes are (D, H, W) = (z, y, x), spacings in mm."""

    name: str
    num_channels: int
    num_classes: int
    labels: dict[int, str]
    #: scored regions: name -> label values whose union forms the region (table column order)
    regions: dict[str, tuple[int, ...]]
    patch_size: tuple[int, int, int]
    batch_size: int
    modality: str  # "CT" or "MRI" (any non-CT modality)
    target_spacing: tuple[float, float, float] | None
    #: the paper's text where it differs from the code (e.g. ACDC depth 14)
    paper_text_patch_size: tuple[int, int, int] | None = None
    #: extra regions the original scripts compute but the table does not show
    extra_regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ct_stats: dict[str, float] | None = None
    #: Dice loss over the whole batch (nnU-Net v1: when the plans have two stages)
    batch_dice: bool = False
    #: name of each input channel (``dataset.json``'s ``modality`` / ``channel_names``)
    channel_names: tuple[str, ...] = ()
    #: ``shipped`` (the paper's split lists, protocols ``paper``/``clean``) or ``folds`` (the
    #: store's ``splits_final.json``; the chosen fold's ``val`` cases are the test cases)
    split: str = "folds"
    #: ``paper``: HD95 in voxels only (the authors' scripts); ``both``: also in mm (``HD95_strict``)
    hd95: str = "both"

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.labels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (label keys as strings, tuples as lists); :meth:`from_dict` inverts it."""
        return {"name": self.name, "num_channels": self.num_channels, "num_classes": self.num_classes,
                "labels": {str(k): v for k, v in sorted(self.labels.items())},
                "regions": {k: list(v) for k, v in self.regions.items()},
                "extra_regions": {k: list(v) for k, v in self.extra_regions.items()},
                "patch_size": list(self.patch_size), "batch_size": self.batch_size, "modality": self.modality,
                "target_spacing": list(self.target_spacing) if self.target_spacing else None,
                "paper_text_patch_size": list(self.paper_text_patch_size) if self.paper_text_patch_size else None,
                "ct_stats": self.ct_stats, "batch_dice": self.batch_dice, "channel_names": list(self.channel_names),
                "split": self.split, "hd95": self.hd95}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetSpec:
        """A spec from :meth:`to_dict` output (e.g. a store's ``dataset.json`` ``plan``).

        Raises:
            ValueError: a key is missing or a region names a label the spec does not have.
        """
        try:
            labels = {int(k): str(v) for k, v in d["labels"].items()}
            spec = cls(
                name=str(d["name"]), num_channels=int(d["num_channels"]), num_classes=int(d["num_classes"]),
                labels=labels, regions=_regions(d["regions"]), patch_size=_ints3(d["patch_size"]),
                batch_size=int(d["batch_size"]), modality=str(d.get("modality", "MRI")),
                target_spacing=tuple(float(x) for x in d["target_spacing"]) if d.get("target_spacing") else None,
                paper_text_patch_size=_ints3(d["paper_text_patch_size"]) if d.get("paper_text_patch_size") else None,
                extra_regions=_regions(d.get("extra_regions") or {}), ct_stats=d.get("ct_stats") or None,
                batch_dice=bool(d.get("batch_dice", False)), channel_names=tuple(d.get("channel_names") or ()),
                split=str(d.get("split", "folds")), hd95=str(d.get("hd95", "both")))
        except KeyError as exc:
            raise ValueError(f"dataset spec of {d.get('name', '?')!r} lacks {exc.args[0]!r}") from None
        if spec.split not in SPLIT_SOURCES or spec.hd95 not in HD95_CONVENTIONS:
            raise ValueError(f"dataset spec of {spec.name!r}: split must be one of {SPLIT_SOURCES} and hd95 one of "
                             f"{HD95_CONVENTIONS}, got {spec.split!r} / {spec.hd95!r}")
        for name, values in {**spec.regions, **spec.extra_regions}.items():
            unknown = sorted(set(values) - set(spec.labels) | ({0} & set(values)))
            if unknown or not values:
                raise ValueError(f"dataset spec of {spec.name!r}: region {name!r} = {list(values)} must be a union "
                                 f"of foreground labels {sorted(set(spec.labels) - {0})}")
        return spec


def _ints3(v) -> tuple[int, int, int]:
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected 3 integers (D, H, W), got {list(v)}")
    return t  # type: ignore[return-value]


def _regions(d: dict) -> dict[str, tuple[int, ...]]:
    return {str(k): tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v])) for k, v in d.items()}


@cache
def _facts() -> dict:
    return json.loads(resources.files("sam3dlib.resources").joinpath("datasets.json").read_text())


def paper_spec_dict(name: str) -> dict[str, Any]:
    """The :meth:`DatasetSpec.to_dict` form of a paper dataset, assembled from ``datasets.json``."""
    f = _facts()[name]
    s = f["sam3dlib_spec"]
    channels = tuple(f["modality"][str(c)] for c in range(f["num_channels"]))
    modality = "CT" if channels == ("CT",) else "MRI"
    stats = f["intensity_normalization"].get("values_if_known") or None
    return {"name": name, "num_channels": f["num_channels"], "num_classes": f["num_output_classes"],
            "labels": f["labels"], "regions": s["regions"], "extra_regions": s.get("extra_regions", {}),
            "patch_size": f["patch_size_zyx"], "batch_size": s["batch_size"], "modality": modality,
            "target_spacing": f.get("target_spacing_zyx"), "paper_text_patch_size": s.get("paper_text_patch_size"),
            "ct_stats": stats if modality == "CT" else None, "batch_dice": s["batch_dice"],
            "channel_names": list(channels), "split": "shipped", "hd95": "paper"}


#: folder of the committed plans inside the package's resources
PLANS_DIR = "plans"


@cache
def _committed(name: str) -> str:
    return resources.files("sam3dlib.resources").joinpath(PLANS_DIR).joinpath(f"{name}.json").read_text()


def committed_plan(name: str) -> dict[str, Any]:
    """The committed plan of ``synapse``, ``acdc``, ``lung`` or ``brats`` (``resources/plans/<name>.json``;
    :mod:`sam3dlib.data.plans` builds and reads plans).

    Raises:
        ConfigError: ``name`` is not one of them.
    """
    if name not in DATASETS:
        raise ConfigError(f"no committed plan for {name!r}; the paper's datasets are {', '.join(DATASETS)}")
    return json.loads(_committed(name))


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``synapse``, ``acdc``, ``lung`` or ``brats`` (their committed plans)."""
    key = name.lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (a dataset of your own "
                         "is prepared with `sam3d prepare --raw DIR --out data/NAME`; its spec lives in that store)")
    return DatasetSpec.from_dict(committed_plan(key))
