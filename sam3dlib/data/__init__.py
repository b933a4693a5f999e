"""The data layer: splits, readers, preprocessing, the prepared store, patch sampling, checks.

``PatchDataset`` (torch/MONAI) is imported lazily so that ``import sam3dlib.data`` stays light.
"""
from __future__ import annotations

from sam3dlib.data.specs import DATASETS, DatasetSpec, get_spec
from sam3dlib.data.splits import PROTOCOLS, Split, get_split
from sam3dlib.data.store import PreparedDataset, StoreError

__all__ = ["DATASETS", "PROTOCOLS", "DatasetSpec", "PatchDataset", "PreparedDataset", "Split", "StoreError",
           "check_dataset", "find_raw_cases", "get_spec", "get_split", "prepare_dataset"]


def __getattr__(name: str):
    if name == "PatchDataset":
        from sam3dlib.data.sampling import PatchDataset
        return PatchDataset
    if name == "prepare_dataset":
        from sam3dlib.data.prepare import prepare_dataset
        return prepare_dataset
    if name == "check_dataset":
        from sam3dlib.data.check import check_dataset
        return check_dataset
    if name == "find_raw_cases":
        from sam3dlib.data.readers import find_raw_cases
        return find_raw_cases
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
