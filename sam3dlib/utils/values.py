"""Checking and converting user-given values: the one set of rules for config fields
(:mod:`sam3dlib.config`, ``--set key=value``) and notebook parameters
(:mod:`sam3dlib.study.notebook_params`, ``papermill -p``).

Each converter takes the value, ``where`` (what the value is, for the message: ``"setting
'epochs' for table1_synapse"``, ``"notebook parameter 'seed'"``) and the error type to raise
(default :class:`~sam3dlib.utils.errors.ConfigError`). Strings from a command line are accepted
where the meaning is unambiguous (``"3"`` for an int, ``"true"`` for a bool).
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sam3dlib.utils.errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
NONE_WORDS = ("none", "null", "")


def fail(where: str, value: Any, expected: str, error: type[Exception] = ConfigError) -> Exception:
    """The error for a value of the wrong kind: ``"<where> must be <expected>; got <value> (<type>)"``."""
    return error(f"{where} must be {expected}; got {value!r} ({type(value).__name__})")


def as_int(value: Any, where: str, error: type[Exception] = ConfigError) -> int:
    """An int, a float without fraction or a string of digits; bools are refused."""
    if isinstance(value, bool):
        raise fail(where, value, "an integer", error)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise fail(where, value, "an integer", error)


def as_float(value: Any, where: str, error: type[Exception] = ConfigError) -> float:
    """A number (int, float or numeric string); bools are refused."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise fail(where, value, "a number", error)
    try:
        return float(value)
    except ValueError:
        raise fail(where, value, "a number", error) from None


def as_bool(value: Any, where: str, error: type[Exception] = ConfigError) -> bool:
    """A bool, or one of the words ``true/false, yes/no, on/off, 1/0``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise fail(where, value, "true/false", error)


def as_choice(value: Any, choices: Sequence[str], where: str, error: type[Exception] = ConfigError,
              allow_none: bool = False) -> str | None:
    """One of ``choices`` (case-insensitive; returned as listed); None passes when ``allow_none``."""
    if value is None and allow_none:
        return None
    listed = ", ".join(choices)
    if not isinstance(value, str):
        raise fail(where, value, f"one of {listed}", error)
    for choice in choices:
        if value.strip().lower() == choice.lower():
            return choice
    raise error(f"{where}: unknown value {value!r}; must be one of {listed}")


def as_int_tuple(value: Any, n: int, where: str, error: type[Exception] = ConfigError) -> tuple[int, ...]:
    """``n`` integers from a sequence or a string like ``"16,96,96"`` / ``"16x96x96"``."""
    if isinstance(value, str):
        value = [p for p in value.replace("x", ",").split(",") if p.strip()]
    if not isinstance(value, Sequence) or len(value) != n:
        raise fail(where, value, f"{n} integers", error)
    return tuple(as_int(v, where, error) for v in value)


def as_str(value: Any, where: str, error: type[Exception] = ConfigError) -> str:
    """A string (a path object is turned into its string)."""
    if not isinstance(value, (str, os.PathLike)):
        raise fail(where, value, "a string", error)
    return os.fspath(value)


def as_path(value: Any, where: str, error: type[Exception] = ConfigError, allow_none: bool = False) -> Path | None:
    """A path (string or path object), ``~`` expanded; None (or ``""``) passes when ``allow_none``."""
    if allow_none and (value is None or value == ""):
        return None
    if not isinstance(value, (str, os.PathLike)) or value == "":
        raise fail(where, value, "a path (string)", error)
    return Path(value).expanduser()


def is_none_word(value: Any) -> bool:
    """Whether a value means "none" (None, or ``none``/``null``/empty text from a command line)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)


__all__ = ["as_bool", "as_choice", "as_float", "as_int", "as_int_tuple", "as_path", "as_str", "fail", "is_none_word"]
