"""The one way sam3dlib makes a matplotlib figure: :func:`new_figure`.

Figures are built without pyplot (no global state, no GUI backend). Such a figure has no PNG
formatter in IPython until ``%matplotlib inline`` runs, so JupyterLab, papermill and the HTML
report would show the text ``<Figure size ... with N Axes>``. :class:`DisplayFigure` renders
itself as PNG (``_repr_png_``), so ``display(fig)`` or a figure as a cell's last value shows the
image everywhere.
"""
from __future__ import annotations

import io
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Resolution of figures shown in notebooks (saved files choose their own).
DISPLAY_DPI = 100


class DisplayFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that IPython displays as a PNG image."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        FigureCanvasAgg(self)  # a canvas of its own: no pyplot backend involved
        self.savefig(buffer, format="png", dpi=DISPLAY_DPI, bbox_inches="tight")
        return buffer.getvalue()


def new_figure(**kwargs: Any) -> DisplayFigure:
    """A figure that displays as PNG in any IPython kernel (``kwargs``: :class:`Figure`'s, e.g.
    ``figsize=(w, h)`` in inches, ``layout="constrained"``)."""
    return DisplayFigure(**kwargs)


__all__ = ["DISPLAY_DPI", "DisplayFigure", "new_figure"]
