"""One function over many items in worker processes, where a worker that dies is noticed.

A process pool whose worker is killed (the out-of-memory killer, ``kill -9``) must not hang:
``multiprocessing.Pool`` replaces the worker and waits forever for the lost task. This map uses
``concurrent.futures.ProcessPoolExecutor``, which marks the pool broken when a worker dies
(``BrokenProcessPool``), and keeps only as many items in flight as there are workers, so the
items being processed when it broke are known and named.

Workers ignore Ctrl-C (SIGINT): the parent alone handles it, stops the pool and re-raises
``KeyboardInterrupt``, so one line is printed instead of one traceback per worker.
"""
from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from tqdm import tqdm

from sam3dlib.utils.errors import UserInputError

T = TypeVar("T")
R = TypeVar("R")


class WorkerLostError(UserInputError, RuntimeError):
    """A worker process died while processing an item (names the items and the likely cause)."""


def _stop(executor) -> None:
    """Stop a pool now: cancel what has not started, end the workers (their writes are atomic)."""
    processes = list(getattr(executor, "_processes", {}).values())  # the running workers
    executor.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=5)


def map_in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool = True,
                     name: Callable[[T], str] = str, what: str = "item") -> Iterator[R]:
    """``fn(item)`` for each of ``items`` in order, in ``workers`` spawned processes (0: here).

    Args:
        fn: a picklable (module-level) function.
        items: picklable arguments.
        workers: worker processes; 0 (or one item) runs in this process.
        desc: the progress bar's label.
        progress: show a progress bar.
        name: how an item is named in an error (e.g. its case id).
        what: what an item is (``case``), for the error.

    Raises:
        WorkerLostError: a worker died (one line naming the items in flight and the likely cause).
        KeyboardInterrupt: Ctrl-C; the workers are stopped first.
    """
    if workers <= 0 or len(items) <= 1:
        for item in tqdm(items, desc=desc, disable=not progress):
            yield fn(item)
        return
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=signal.signal,
                                   initargs=(signal.SIGINT, signal.SIG_IGN))  # Ctrl-C is the parent's
    pending: deque = deque()
    queue = iter(items)
    clean = False
    try:
        with tqdm(total=len(items), desc=desc, disable=not progress) as bar:
            for item in queue:
                try:
                    pending.append((item, executor.submit(fn, item)))
                except BrokenProcessPool:  # a worker died since the last result: name the items in flight
                    raise _lost(pending, workers, what, name) from None
                if len(pending) < workers:
                    continue
                yield _result(pending, workers, what, name)
                bar.update(1)
            while pending:
                yield _result(pending, workers, what, name)
                bar.update(1)
        clean = True
    finally:
        if clean:
            executor.shutdown(wait=True)
        else:
            _stop(executor)


def _result(pending: deque, workers: int, what: str, name: Callable[[Any], str]):
    """The first pending item's result; a dead worker becomes :class:`WorkerLostError`."""
    from concurrent.futures.process import BrokenProcessPool

    item, future = pending[0]
    try:
        value = future.result()
    except BrokenProcessPool:
        raise _lost(pending, workers, what, name) from None
    pending.popleft()
    return value


def _lost(pending: deque, workers: int, what: str, name: Callable[[Any], str]) -> WorkerLostError:
    """The error for a pool whose worker died while ``pending`` items were in flight."""
    in_flight = [name(it) for it, future in pending if not (future.done() and future.exception() is None)]
    listed = (in_flight[0] if len(in_flight) == 1 else f"one of {', '.join(in_flight)} (processed together)"
              if in_flight else "(the one in progress)")
    return WorkerLostError(
        f"a worker process died while processing {what} {listed}: most likely the system ran out of memory "
        f"and killed it; rerun with fewer workers (--workers {max(0, workers - 1)}) to resume, finished "
        f"{what}s are kept")


__all__ = ["WorkerLostError", "map_in_processes"]
