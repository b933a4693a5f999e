"""Which exceptions are the user's input problems, and their one-line messages.

``sam3d``'s ``main`` prints these as ``sam3d CMD: error: ...`` with exit code 2 instead of a
traceback: bad values (``ValueError``), missing or unwritable files and full disks
(``OSError``), unknown case ids (``KeyError``) and running out of memory.
"""
from __future__ import annotations


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user-caused error, or None for a bug (re-raise it)."""
    from sam3dlib.utils.oom import TrainingOOMError, is_oom_error

    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError):
        if exc.filename and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        return str(exc.strerror or exc)
    if isinstance(exc, (ValueError, TrainingOOMError)):
        return str(exc)
    if isinstance(exc, RuntimeError) and is_oom_error(exc):
        return f"out of memory: {exc}"
    return None
