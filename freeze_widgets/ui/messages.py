"""Message area: one readable line per problem, details behind a toggle, never a raw traceback."""

from __future__ import annotations

import html
import traceback
from typing import Any

import ipywidgets as widgets

from freeze_widgets.base.wording import one_line

__all__ = ["MessageArea", "one_line"]


class MessageArea(widgets.HTML):
    """Shows the last error or notice; ``last_error`` keeps the line for tests and scripts."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("fw-message")
        self.last_error: str | None = None

    def error(self, exc: BaseException, context: str = "") -> None:
        line = one_line(exc)
        self.last_error = f"{context}: {line}" if context else line
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.value = (
            '<div class="fw-error" style="color:var(--jp-error-color1,#c62828)">'
            f"&#9888; {html.escape(self.last_error)}"
            '<details style="color:var(--jp-ui-font-color2,#666)"><summary>details</summary>'
            f'<pre style="font-size:0.85em;white-space:pre-wrap">{html.escape(details)}</pre>'
            "</details></div>"
        )

    def refuse(self, text: str) -> None:
        """A refused action: one line saying why (kept in ``last_error`` for tests)."""
        self.last_error = text
        self.value = (
            '<div class="fw-refused" style="color:var(--jp-warn-color0,#a15c00)">'
            f"&#9888; {html.escape(text)}</div>"
        )

    def info(self, text: str) -> None:
        self.last_error = None
        style = "color:var(--jp-ui-font-color2,#555)"
        self.value = f'<div class="fw-info" style="{style}">{html.escape(text)}</div>'

    def clear(self) -> None:
        self.last_error = None
        self.value = ""
