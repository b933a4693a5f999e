"""Turn the library's input/output errors into one-line ``UserError`` messages (exit code 2).

``sam3d``'s ``main`` prints ``UserError``/``ValueError``/``FileNotFoundError``/``PermissionError``
as one line; this decorator extends that to every ``OSError`` (an unwritable folder, a full
disk), ``KeyError`` (an unknown case id) and running out of memory, so no bad input ends in a
traceback.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from . import UserError


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror and not exc.filename:
        return str(exc.strerror)
    return str(exc)


def user_errors(func: Callable[..., int]) -> Callable[..., int]:
    """Decorate a subcommand's ``run(args)``: OSError / KeyError / OOM become :class:`UserError`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> int:
        from ..resources_guard import TrainingOOMError, is_oom_error

        try:
            return func(*args, **kwargs)
        except UserError:
            raise
        except (OSError, KeyError, TrainingOOMError) as exc:
            raise UserError(_message(exc)) from exc
        except RuntimeError as exc:
            if is_oom_error(exc):
                raise UserError(f"out of memory: {exc}") from exc
            raise

    return wrapper
