"""Peak memory of a stretch of work on its device (a run's training steps, for the tables).

On a CUDA device it is PyTorch's peak allocated memory since :meth:`PeakMemory.start` (exact per
run). On the CPU there is no allocator counter, so a daemon thread samples the process's resident
set size (``/proc/self/statm``) every few milliseconds: the peak includes everything else the
process holds (Python, libraries, data, earlier runs in the same process) and can miss spikes
shorter than the sampling interval. Where ``/proc`` does not exist it is None (not measured).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

#: how the peak was measured, per device type (written beside the number)
MEASURES = {"cuda": "torch.cuda.max_memory_allocated", "cpu": "process resident set size, sampled"}
_STATM = Path("/proc/self/statm")


def resident_bytes() -> int | None:
    """The process's resident set size in bytes now (None where ``/proc`` does not exist)."""
    try:
        pages = int(_STATM.read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Track the peak memory on ``device`` between :meth:`start` and :meth:`stop` (restartable).

    Args:
        device: the training device.
        interval_s: the CPU sampling interval.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device, self.interval_s = device, interval_s
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def measure(self) -> str:
        return MEASURES["cuda" if self.device.type == "cuda" else "cpu"]

    def start(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self._record(resident_bytes())
            if self._stop.wait(self.interval_s):
                return

    def _record(self, value: int | None) -> None:
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = value

    def stop(self) -> int | None:
        """Stop tracking; the peak in bytes so far (None: not measurable here)."""
        if self.device.type == "cuda":
            self._record(int(torch.cuda.max_memory_allocated(self.device)))
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._record(resident_bytes())
        return self.peak

    def peak_gib(self) -> float | None:
        return None if self.peak is None else self.peak / 2**30


__all__ = ["MEASURES", "PeakMemory", "resident_bytes"]
