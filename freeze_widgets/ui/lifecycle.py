"""Closing an explorer for real: every widget it made, and the previous explorer of a cell.

``VBox.close()`` closes only the box: its children stay registered in ipywidgets' instance table
and their handlers (bound methods of the explorer) keep the model alive. These helpers close a
whole widget tree, and remember the last explorer shown per model and per notebook cell so a
re-run releases the old one.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets

__all__ = [
    "close_created",
    "close_widget_tree",
    "current_cell_id",
    "remember",
    "take_previous",
    "track_created",
]

# Weak values: remembering an explorer must never be what keeps it (and its model) alive.
_BY_KEY: weakref.WeakValueDictionary[tuple[str, Any], Any] = weakref.WeakValueDictionary()


def _owned_widgets(widget: widgets.Widget) -> Iterator[widgets.Widget]:
    """The widget's children, layout and style (each a widget model of its own)."""
    yield from getattr(widget, "children", ()) or ()
    for name in ("layout", "style"):
        part = getattr(widget, name, None)
        if isinstance(part, widgets.Widget):
            yield part


def close_widget_tree(root: widgets.Widget) -> int:
    """Close ``root`` and every widget below it (children, layouts, styles); returns how many.

    Shared layouts are closed once; closing a closed widget is harmless.
    """
    seen: set[int] = set()
    stack = [root]
    closed = 0
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        stack.extend(_owned_widgets(widget))
        if widget.comm is not None:  # None once closed
            closed += 1
        widget.close()
    return closed


def _registry() -> dict[str, widgets.Widget]:
    # ipywidgets 8 keeps every open widget here (``Widget.widgets`` is its deprecated alias).
    registry = getattr(widgets.widget, "_instances", None)
    return registry if isinstance(registry, dict) else {}


@contextmanager
def track_created(made: dict[str, weakref.ref[widgets.Widget]]) -> Iterator[None]:
    """Record (weakly) every widget created inside the block, including ones no tree reaches.

    A widget built and then replaced (a default ``Layout`` swapped for a shared one) is still
    registered; only this record can close it.
    """
    before = set(_registry())
    try:
        yield
    finally:
        for key, widget in list(_registry().items()):
            if key not in before:
                made[key] = weakref.ref(widget)


def close_created(made: dict[str, weakref.ref[widgets.Widget]]) -> None:
    """Close every recorded widget still alive."""
    for ref in made.values():
        widget = ref()
        if widget is not None:
            widget.close()
    made.clear()


def current_cell_id() -> str | None:
    """The id of the notebook cell being run (JupyterLab and Notebook 7 send it), else None."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        kernel = getattr(shell, "kernel", None)
        if kernel is None:
            return None
        parent = kernel.get_parent()
        cell = (parent or {}).get("metadata", {}).get("cellId")
    except Exception:  # no kernel, an old ipykernel: there is simply no cell to key on
        return None
    return str(cell) if cell else None


def _keys(model: Any, cell: str | None) -> list[tuple[str, Any]]:
    keys: list[tuple[str, Any]] = [] if model is None else [("model", id(model))]
    if cell is not None:
        keys.append(("cell", cell))
    return keys


def take_previous(model: Any, cell: str | None) -> list[Any]:
    """The live explorers shown before for this model object or this cell (forgotten here)."""
    found: list[Any] = []
    for key in _keys(model, cell):
        old = _BY_KEY.pop(key, None)
        if old is not None and all(old is not f for f in found):
            found.append(old)
    return found


def remember(explorer: Any, model: Any, cell: str | None) -> None:
    """Record ``explorer`` as the last one shown for ``model`` and for ``cell``."""
    for key in _keys(model, cell):
        _BY_KEY[key] = explorer
