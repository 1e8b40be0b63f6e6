"""What the fine-tune and export panels share: meta-device check, busy line, closing widgets."""

from __future__ import annotations

import itertools

import ipywidgets as widgets
from torch import nn

from .background import BusyState

__all__ = ["busy_line", "close_widget_tree", "meta_tooltip", "on_meta_device"]


def on_meta_device(model: nn.Module) -> bool:
    """True when any parameter or buffer is on the meta device (structure only, no values)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return any(t.is_meta for t in tensors)


def meta_tooltip(action: str) -> str:
    """Why ``action`` cannot run on a structure-only model, and how to load weights."""
    return (
        f"Cannot {action}: the model is on the meta device (structure only, no weights). "
        "Load it with weights first, e.g. load_model(name, device='cpu') or "
        "explore(name, device='cpu'), or model.to_empty(device='cpu') then load a state_dict."
    )


def busy_line(busy: BusyState | None) -> str:
    """The line a panel shows when another run holds the model."""
    reason = busy.reason if busy is not None and busy.reason else "another run"
    return f"the model is busy: {reason}; try again when it ends"


def close_widget_tree(root: widgets.Widget) -> None:
    """Close every widget below ``root`` and every layout and style model, not ``root`` itself.

    ``root`` is left to its own ``close`` (usually the caller's ``super().close()``).
    """
    seen: set[int] = set()
    stack: list[widgets.Widget] = [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        stack.extend(getattr(widget, "children", ()) or ())
        for trait in ("layout", "style"):
            part = getattr(widget, trait, None)
            if isinstance(part, widgets.Widget):
                stack.append(part)
        if widget is not root:
            widget.close()
