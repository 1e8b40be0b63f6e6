"""What the fine-tune and export panels share: the meta-device tooltip and the busy line."""

from __future__ import annotations

from freeze_widgets.base.checks import meta_device_message
from freeze_widgets.ui.background import BusyState

__all__ = ["busy_line", "meta_tooltip"]


def meta_tooltip(action: str) -> str:
    """Why ``action`` cannot run on a structure-only model, as a sentence for a tooltip."""
    text = meta_device_message(action)
    return text[0].upper() + text[1:]


def busy_line(busy: BusyState | None) -> str:
    """The line a panel shows when another run holds the model."""
    reason = busy.reason if busy is not None and busy.reason else "another run"
    return f"the model is busy: {reason}; try again when it ends"
