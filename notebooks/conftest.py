"""nbval checks of the notebooks beyond their stored outputs (``make test`` runs ``--nbval notebooks``).

A cell tagged ``figure`` (:data:`sam3dlib.study.report_page.FIGURE_TAG`, given by ``_build.py``)
must display at least one PNG image when it runs, in a plain kernel as papermill and JupyterLab
start it: a figure shown as the text ``<Figure size ...>`` fails here.
"""
from __future__ import annotations

import pytest

FIGURE_TAG = "figure"


def figure_cell_problem(cell, outputs) -> str | None:
    """Why a ``figure`` cell's ``outputs`` (nbformat output dicts) fail, or None."""
    if FIGURE_TAG not in cell.get("metadata", {}).get("tags", []):
        return None
    if any("image/png" in (o.get("data") or {}) for o in outputs):
        return None
    shown = [(o.get("data") or {}).get("text/plain", o.get("text", "")) for o in outputs]
    return f"figure cell displayed no image/png; its outputs: {shown!r}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    cell = getattr(item, "cell", None)
    if cell is None or outcome.excinfo is not None:
        return
    problem = figure_cell_problem(cell, getattr(item, "test_outputs", None) or [])
    if problem:
        outcome.force_exception(AssertionError(f"{item.name}: {problem}"))
