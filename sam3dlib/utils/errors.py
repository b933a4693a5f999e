"""The project's own error types: problems with what the user gave us, not bugs.

Every error that means "your input is wrong" (a data file, a checkpoint, a config value, a
notebook parameter, a run folder, an output folder) derives from :class:`UserInputError`
*and* from the built-in type callers already catch (``ValueError``, ``FileNotFoundError`` ...).
``sam3d`` prints these as one line (``sam3d CMD: error: ...``, exit code 2); any other
exception is a bug and keeps its traceback (``sam3dlib.cli``).

Examples::

    >>> class DataFileError(UserInputError, ValueError): ...
    >>> isinstance(DataFileError("x.nii.gz: not a NIfTI file"), ValueError)
    True
"""
from __future__ import annotations


class UserInputError(Exception):
    """Base of the errors caused by the user's input; the message names the input and the fix."""


class ConfigError(UserInputError, ValueError):
    """A configuration value (``ExperimentConfig`` field, ``--set`` override) is unknown or out of range."""


class MissingFileError(UserInputError, FileNotFoundError):
    """A file or folder the user named (raw data, an input scan, a checkpoint) does not exist."""


class UnknownCaseError(UserInputError, KeyError):
    """A case id that is not in the store or folder; the message names the case and the place."""

    def __str__(self) -> str:  # the message, not KeyError's quoted repr
        return str(self.args[0]) if self.args else ""


class InputNote(UserWarning):
    """A user's input read with a correction (a header's voxel sizes taken from its affine, a
    checkpoint's DataParallel ``module.`` prefix removed): ``sam3d`` prints it as one line
    ``sam3d CMD: warning: ...``; the message names the file and what was done."""


__all__ = ["ConfigError", "InputNote", "MissingFileError", "UnknownCaseError", "UserInputError"]
