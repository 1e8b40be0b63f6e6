"""The Jupyter layer: thin widgets over the core. The explorer needs ipywidgets and anywidget.

The explorer loads on first use; :mod:`freeze_widgets.ui.netron_view` (``show_netron``) needs
anywidget only, for the graph view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from freeze_widgets.ui.explorer import FreezeExplorer, explore
    from freeze_widgets.ui.guarded import ModelBusy

__all__ = ["FreezeExplorer", "ModelBusy", "explore"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        home = "guarded" if name == "ModelBusy" else "explorer"
        return getattr(importlib.import_module(f"freeze_widgets.ui.{home}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
