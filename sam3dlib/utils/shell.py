"""Commands printed for the user to run (``next: ...`` hints, "run ... to fix it"): quoted for a
POSIX shell, so that paths with spaces or other special characters work when pasted."""
from __future__ import annotations

import os
import shlex


def shell_command(*words: str | os.PathLike) -> str:
    """``shell_command("sam3d", "prepare", "--raw", Path("my data"))`` -> ``sam3d prepare --raw 'my data'``."""
    return shlex.join(str(w) for w in words)


__all__ = ["shell_command"]
