"""The version of sam3dlib that is running (recorded in every file that a later version may read:
run configs, training checkpoints, provenance)."""
from __future__ import annotations


def package_version() -> str:
    """``sam3dlib.__version__`` (the one place the version is set)."""
    from sam3dlib import __version__

    return __version__


__all__ = ["package_version"]
