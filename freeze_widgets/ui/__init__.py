"""The Jupyter layer: thin widgets over the core. Importing this needs ipywidgets and anywidget."""

from __future__ import annotations

from .explorer import FreezeExplorer, explore

__all__ = ["FreezeExplorer", "explore"]
