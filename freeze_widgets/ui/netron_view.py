"""Show a Netron server inside a notebook: an IFrame locally or behind a hub, Colab's own frame.

The server itself (start, stop, the URL a browser can reach) is core:
:mod:`freeze_widgets.graph.netron`.
"""

from __future__ import annotations

import os
import webbrowser
from typing import Any

from freeze_widgets.graph.netron import NetronServer, start_netron

__all__ = ["ColabFrame", "colab_output", "show_netron"]


class ColabFrame:
    """Marker returned on Colab, where Colab itself displays the frame."""

    def __init__(self, server: NetronServer) -> None:
        self.server = server

    def __repr__(self) -> str:
        return f"<Netron for {self.server.path.name} on Colab port {self.server.port}>"


def colab_output() -> Any:
    """``google.colab.output`` when running on Colab, else None."""
    try:
        from google.colab import output  # type: ignore[import-not-found]
    except ImportError:
        return None
    return output


def show_netron(
    path: str | os.PathLike[str],
    *,
    height: int = 600,
    base_url: str | None = None,
    browse: bool = False,
) -> Any:
    """Show ``path`` in Netron inside the notebook (docs/design.md, trap 6).

    The server runs until ``stop_netron(path)`` (there is no widget to close here); widgets hold
    theirs through ``open_view`` and release it on close.

    Args:
        path: Model file to show.
        height: Frame height in pixels.
        base_url: Proxy prefix, for hubs the environment variables don't describe.
        browse: Also open the URL in a web browser (only when it is absolute).

    Returns:
        An ``IPython.display.IFrame``; on Colab a marker object, since Colab displays the
        frame itself.
    """
    server = start_netron(path, base_url=base_url)
    colab = colab_output()
    if colab is not None:
        colab.serve_kernel_port_as_iframe(server.port, height=str(height))
        return ColabFrame(server)
    if browse and server.url.startswith("http"):
        webbrowser.open(server.url)
    from IPython.display import IFrame

    return IFrame(server.url, width="100%", height=height)
