"""Jobs for worker-process tests: importable by a spawned worker without importing torch."""
from __future__ import annotations

import os
import signal


def killed_on_two(x: int) -> int:
    """Dies on item 2 as the out-of-memory killer would end it (SIGKILL); else ``10 * x``."""
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10
