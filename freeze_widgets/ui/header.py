"""Header: trainable / frozen / total, trainable percent, a bar, training memory, weights notice."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from freeze_widgets.base.wording import format_count
from freeze_widgets.tree import ParamCounts, percent

__all__ = ["Header", "weights_notice"]

_RANDOM = "random: pretrained weights unavailable"


def _checkpoint_hint(model_name: str | None) -> str:
    """Where the weights file goes, for a torchvision name; a pointer to load_model otherwise."""
    if model_name and ":" not in model_name:
        try:
            import os

            import torch
            from torchvision import models as tvm

            url = tvm.get_model_weights(model_name).DEFAULT.url
            folder = os.path.join(torch.hub.get_dir(), "checkpoints")
            folder = folder.replace(os.path.expanduser("~"), "~", 1)
            return f"Put {url.rsplit('/', 1)[-1]} in {folder} (see load_model)"
        except Exception:  # not a torchvision name with weights: the generic hint below
            pass
    return "Put the weights file in the local cache and load again (see load_model)"


def weights_notice(source: str, model_name: str | None = None, hint: str | None = None) -> str:
    """One plain line about where the weights came from, or "" when nothing needs saying.

    ``source`` is :func:`~freeze_widgets.models.weights.weights_source`; its raw reason (for example
    a ``URLError``) stays out of the line, which says what happened and how to fix it.
    """
    if source.startswith(_RANDOM):
        how = hint or _checkpoint_hint(model_name)
        return "Random weights: the pretrained file could not be loaded. " + how
    if source.startswith("random"):
        return "Random weights (pretrained=False)."
    if source.startswith("none"):
        return (
            "Structure only (meta device, no weights): fine-tune and export need real "
            'weights, from load_model(name) without device="meta".'
        )
    return ""


class Header(widgets.HTML):
    """Counts for the whole model; numbers carry ``data-value`` for tests and scripts."""

    def __init__(self, title: str, note: str = "", note_detail: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("fw-header")
        self.title = title
        self.note = note
        self.note_detail = note_detail
        self.counts = ParamCounts(0, 0, 0)
        self.cost = ("", "")

    def show(self, counts: ParamCounts, cost: tuple[str, str] = ("", "")) -> None:
        """Render ``counts`` and the training-memory line ``(text, tooltip)``."""
        self.counts = counts
        self.cost = cost
        pct = 100.0 * counts.trainable_fraction

        def num(cls: str, value: int) -> str:
            # Big counts also as people quote them (69.0B), exact figure first.
            short = f' <small class="fw-abbr">({format_count(value)})</small>' * (value >= 10**6)
            return f'<span class="{cls}" data-value="{value}"><b>{value:,}</b></span>{short}'

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
            f"{self._cost_html()}{self._note_html()}</div>"
        )

    def _cost_html(self) -> str:
        text, tip = self.cost
        if not text:
            return ""
        return (
            f'<div class="fw-cost" title="{html.escape(tip)}" style="cursor:help;'
            f'color:var(--jp-ui-font-color1,#222)">{html.escape(text)} (?)</div>'
        )

    def _note_html(self) -> str:
        if not self.note:
            return ""
        title = f' title="{html.escape(self.note_detail)}"' if self.note_detail else ""
        return (
            f'<div class="fw-note"{title} style="color:var(--jp-warn-color0,#a15c00);'
            f'margin-top:2px">{html.escape(self.note)}</div>'
        )
