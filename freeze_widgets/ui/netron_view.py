"""``show_netron(path)``: the graph view of a model file, as a widget (no server, no port)."""

from __future__ import annotations

import os

from freeze_widgets.ui.graph_view import GraphView

__all__ = ["show_netron"]


def show_netron(
    path: str | os.PathLike[str], *, height: int = 600, weights: bool = False
) -> GraphView:
    """Show ``path`` in Netron inside the notebook, with the exported freeze drawn on it.

    netron's viewer runs inside the widget, fed over the kernel comm from the installed
    ``netron`` package: nothing listens on a port, and it works wherever widgets work (JupyterLab,
    Notebook 7, Voila, a remote hub, VS Code). A missing or unreadable file shows its message in
    the widget instead of raising.

    Args:
        path: Model file to show (ONNX; other formats netron reads are sent whole).
        height: Height of the graph in pixels.
        weights: Send the weight values too (default: the graph and shapes only, ~0.2% of the
            bytes for ResNet-18).

    Returns:
        The :class:`~freeze_widgets.ui.graph_view.GraphView` (display it as a cell's last line).
    """
    return GraphView(path, height=height, weights=weights)
