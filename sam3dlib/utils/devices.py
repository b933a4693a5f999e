"""Device names: the one rule for ``auto``/``cpu``/``cuda``/``cuda:N`` (parsing and resolving).

Parsing needs no torch (the CLI checks ``--device`` without importing it); resolving does.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sam3dlib.utils.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: The device names every entry point accepts (config ``device``, ``--device``, notebook ``device``).
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def parse_device(value: object, where: str = "device") -> str:
    """Check a device name and return it normalised (lower case, no blanks).

    Args:
        value: ``"auto"`` (cuda when available, else cpu), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        where: what the value is, for the message (``"setting 'device' of table1_synapse"``).

    Returns:
        The name; ``cuda:N`` keeps its index (only :func:`resolve_device` looks at the hardware).

    Raises:
        ConfigError: not a string, or not one of the names above (a ``ValueError``).
    """
    text = value.strip().lower() if isinstance(value, str) else None
    if text is None or not _DEVICE.match(text):
        raise ConfigError(f"{where}: unknown device {value!r}; use {DEVICE_CHOICES}")
    return text


def is_cuda(device: str) -> bool:
    """Whether a (valid) device name asks for a GPU: ``cuda``/``cuda:N``, or ``auto`` with one present."""
    import torch

    name = parse_device(device)
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


def resolve_device(device: str, local_rank: int | None = None, flag: str = "--set device=") -> torch.device:
    """The torch device of a device name.

    Args:
        device: see :func:`parse_device`; ``auto`` -> ``cuda`` when available, else ``cpu``.
        local_rank: under DDP, the process's GPU (``cuda``/``auto`` map to ``cuda:<local_rank>``).
        flag: how the calling command sets the device, completed by a value in the messages
            (``--set device=`` for train, ``--device `` for predict and reproduce).

    Raises:
        ConfigError: an unknown name, a GPU asked for but absent, an index past the GPU count, or
            an explicit ``cuda:N`` under DDP (every rank uses its own GPU, ``LOCAL_RANK``).
    """
    import torch

    name = parse_device(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but no CUDA GPU is available; use {flag}cpu")
    if ":" in name:
        index = int(name.split(":")[1])
        if local_rank is not None:
            raise ConfigError(f"device {name!r}: under torchrun each process uses its own GPU (LOCAL_RANK); use {flag}cuda")
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible (cuda:0..)")
        return torch.device("cuda", index)
    return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())


__all__ = ["DEVICE_CHOICES", "is_cuda", "parse_device", "resolve_device"]
