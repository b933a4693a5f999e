"""Keep freed tensor memory inside the process on CPU (Linux/glibc), so it is reused warm.

glibc serves every allocation above 32 MB with a fresh ``mmap`` and returns it to the
kernel on free. A SAM3D training step allocates and frees gigabytes of such tensors
(Synapse, depth 32: about 550 000 page faults and 1.7-2.5 s of kernel time per decoder
step, measured), so every step pays to fault in and zero the same pages again. With
``mmap`` off and trimming off, freed blocks stay in the heap and the next step reuses them:
the decoder step went from 4.9-5.8 s to 4.1-4.3 s and the 64-slice encoder pass from
14.3 s to 12.9 s (``docs/PERFORMANCE.md``). The cost: the process keeps its peak heap until
it exits (peak RSS +10 % in the same measurement), which a training or prediction process
keeps anyway.
"""
from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def reuse_freed_host_memory(device_type: str = "cpu") -> bool:
    """Turn off glibc's ``mmap`` allocations and heap trimming for this process.

    Returns True when applied; False (a no-op) when the tensors live on another device
    (``device_type`` other than ``"cpu"``), off Linux or without glibc's ``mallopt`` (musl,
    macOS, Windows). Process-wide and not undone: for processes that train or predict.
    """
    if device_type != "cpu" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
