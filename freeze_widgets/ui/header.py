"""Header: trainable / frozen / total, trainable percent and a bar."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..tree import ParamCounts, percent

__all__ = ["Header"]


class Header(widgets.HTML):
    """Counts for the whole model; numbers carry ``data-value`` for tests and scripts."""

    def __init__(self, title: str, note: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("fw-header")
        self.title = title
        self.note = note
        self.counts = ParamCounts(0, 0, 0)

    def show(self, counts: ParamCounts) -> None:
        self.counts = counts
        pct = 100.0 * counts.trainable_fraction
        note = (
            f'<div class="fw-note" style="color:var(--jp-warn-color0,#a15c00);margin-top:2px">'
            f"{html.escape(self.note)}</div>"
            if self.note
            else ""
        )

        def num(cls: str, value: int) -> str:
            return f'<span class="{cls}" data-value="{value}"><b>{value:,}</b></span>'

        self.value = (
            '<div class="fw-header-inner" style="font-variant-numeric:tabular-nums;'
            'font-family:var(--jp-ui-font-family,system-ui);line-height:1.6">'
            f'<span style="font-size:1.1em;font-weight:600">{html.escape(self.title)}</span>'
            f" &nbsp; trainable {num('fw-trainable', counts.trainable)}"
            f" &middot; frozen {num('fw-frozen', counts.frozen)}"
            f" &middot; total {num('fw-total', counts.total)}"
            f' &middot; <span class="fw-percent">{percent(counts.trainable, counts.total)}</span>'
            " trainable"
            '<div class="fw-bar" style="height:6px;border-radius:3px;max-width:640px;'
            'background:var(--jp-info-color3,#bcd4ee)" title="trainable share">'
            f'<div style="width:{pct:.3f}%;height:100%;border-radius:3px;'
            'background:var(--jp-success-color1,#2e7d32)"></div></div>'
            f"{note}</div>"
        )
