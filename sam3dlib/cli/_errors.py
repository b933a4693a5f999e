"""Which exceptions ``sam3d`` prints as one line, and their messages.

``sam3d``'s ``main`` prints these as ``sam3d CMD: error: ...`` with exit code 2 instead of a
traceback:

* the project's own error types, :class:`sam3dlib.utils.errors.UserInputError` and its
  subclasses (bad data files, checkpoints, config values, notebook parameters, run and output
  folders: ``DataFileError``, ``CheckpointError``, ``ConfigError``, ``ParameterError``,
  ``StoreError``, ``RunError``, ``OutputError`` ...);
* errors of the machine, not of the code: an ``OSError`` the operating system raised for a named
  file (missing, unreadable, disk full) and running out of memory.

Anything else (a plain ``ValueError``, ``KeyError``, ``TypeError`` ...) is a bug and keeps its
traceback.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

from sam3dlib.utils.errors import UserInputError


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user-caused error, or None for a bug (re-raise it)."""
    from sam3dlib.utils.oom import TrainingOOMError, is_oom_error

    if isinstance(exc, (UserInputError, TrainingOOMError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, RuntimeError) and is_oom_error(exc):
        return f"out of memory: {exc}"
    return None


@contextlib.contextmanager
def warnings_as_lines(command: str, *categories: type[Warning]) -> Iterator[None]:
    """Print each warning of ``categories`` raised inside as one line ``sam3d CMD: warning: ...``
    (once per message); other warnings are passed on unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen: set[str] = set()
            for w in caught:
                if not issubclass(w.category, categories):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                elif str(w.message) not in seen:
                    seen.add(str(w.message))
                    print(f"sam3d {command}: warning: {w.message}", file=sys.stderr)
