"""A restricted unpickler for nnU-Net v1 ``.pkl`` files (case properties, plans, splits).

Pickles can execute arbitrary code on load. Those files only ever hold plain containers,
strings, numbers and numpy arrays, so only those types may be reconstructed; anything else
(e.g. ``os.system``, ``builtins.eval``) is refused with an error naming the file and the
offending global.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

_ALLOWED = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name} (only plain data types are allowed)")


def safe_load_pickle(path: str | Path) -> Any:
    """Load ``path`` with the restricted unpickler."""
    with open(path, "rb") as fh:
        return _RestrictedUnpickler(fh).load()


def safe_load_pickle_bytes(data: bytes) -> Any:
    """Load a pickle held in memory (e.g. a zip member) with the restricted unpickler."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()
