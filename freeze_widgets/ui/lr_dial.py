"""The "lr ×" control: set learning-rate multipliers beside the freeze, see them per row.

A mode (uniform / layer decay with its factor / discriminative lo–hi) sets one multiplier per
top-level group; a row can be set by hand. The table shows each row's multiplier (frozen rows
at 0), the spec saves them (``FreezeSpec.lr_mult``), and the code view writes them for plain
torch or mmengine, or says why a target cannot take them. Self-contained, so the explorer can
show it beside the tree without changing the tree's payload.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
from torch import nn

from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.training.lr_dial import (
    CONFIG_TARGETS,
    dial_multipliers,
    lr_config,
    row_multipliers,
)
from freeze_widgets.ui.messages import MessageArea

__all__ = ["LrDial"]

_CELL = "padding:1px 16px 1px 0;text-align:left"

_MODES = [
    ("uniform", "uniform"),
    ("layer decay", "layer_decay"),
    ("discriminative lo–hi", "discriminative"),
]


class LrDial(widgets.VBox):
    """Learning-rate multipliers for ``model``'s rows, shown in an "lr ×" table.

    Args:
        model: The model (read only: its top-level groups and ``requires_grad`` flags).
        lr: The top rate the code view writes.
    """

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, **kwargs: Any) -> None:
        self.model, self.lr = model, lr
        self.edits: dict[str, float] = {}
        self.multipliers: dict[str, float] = {}
        self.rows: dict[str, float | None] = {}
        self.mode = widgets.Dropdown(options=_MODES, value="uniform", description="lr ×")
        self.factor = widgets.FloatText(0.75, description="factor")
        self.lo = widgets.FloatText(0.01, description="lo ×")
        self.row_path = widgets.Text(placeholder="row path, e.g. layer4", description="row")
        self.row_mult = widgets.FloatText(1.0, description="lr ×")
        self.set_button = widgets.Button(description="set row")
        self.target = widgets.Dropdown(options=list(CONFIG_TARGETS), description="code")
        self.table = widgets.HTML()
        self.code = widgets.HTML()
        self.messages = MessageArea()
        for w in (self.mode, self.factor, self.lo, self.target):
            w.observe(self._on_change, names="value")
        self.set_button.on_click(self._on_set)
        super().__init__(
            [
                widgets.HBox([self.mode, self.factor, self.lo]),
                widgets.HBox([self.row_path, self.row_mult, self.set_button]),
                self.table,
                self.target,
                self.code,
                self.messages,
            ],
            **kwargs,
        )
        self.add_class("fw-lr-dial")
        for widget, name in (
            (self.mode, "mode"),
            (self.factor, "factor"),
            (self.lo, "lo"),
            (self.row_path, "row-path"),
            (self.row_mult, "row-mult"),
            (self.set_button, "set"),
            (self.target, "target"),
        ):
            widget.add_class(f"fw-lr-{name}")  # stable selectors for people's CSS and tests
        self.refresh()

    def refresh(self) -> None:
        """Recompute the multipliers and redraw; a bad setting shows one line, nothing else."""
        try:
            mults = dial_multipliers(
                self.model,
                str(self.mode.value),
                factor=self.factor.value,
                lo=self.lo.value,
                edits=self.edits,
            )
            rows = row_multipliers(self.model, mults)
        except (TypeError, ValueError) as exc:
            self.messages.error(exc, "lr ×")
            return
        self.messages.clear()
        self.multipliers, self.rows = mults, rows
        self.factor.layout.display = "" if self.mode.value == "layer_decay" else "none"
        self.lo.layout.display = "" if self.mode.value == "discriminative" else "none"
        self.table.value = self._table_html()
        self.code.value = self._code_html()

    def set_row(self, path: str, mult: float) -> None:
        """Set one row's multiplier by hand (kept across mode changes)."""
        before = dict(self.edits)
        self.edits[path] = mult
        self.refresh()
        if self.messages.last_error is not None:
            self.edits = before  # the bad edit is not kept; the message says why

    def spec(self) -> FreezeSpec:
        """The current freeze with these multipliers (``FreezeSpec.lr_mult``)."""
        base = FreezeSpec.from_model(self.model)
        return FreezeSpec(base.frozen, base.bn, lr_mult=tuple(self.multipliers.items()))

    def _on_change(self, _change: Any) -> None:
        self.refresh()

    def _on_set(self, _button: Any) -> None:
        self.set_row(self.row_path.value.strip(), self.row_mult.value)

    def _table_html(self) -> str:
        cells = []
        for path in self.multipliers:
            value = self.rows.get(path)
            shown = "mixed" if value is None else "0 (frozen)" if value == 0 else f"{value:.3g}"
            cells.append(
                f'<tr><td class="fw-lr-path" style="{_CELL}">{html.escape(path or "(model)")}'
                f'</td><td class="fw-lr-mult" style="{_CELL}">{shown}</td></tr>'
            )
        head = f'<tr><th style="{_CELL}">row</th><th style="{_CELL}">lr ×</th></tr>'
        return f'<table class="fw-lr-table">{head}{"".join(cells)}</table>'

    def _code_html(self) -> str:
        try:
            config = lr_config(self.multipliers, str(self.target.value), lr=self.lr)
        except ValueError as exc:
            return f'<div class="fw-lr-cannot">{html.escape(str(exc))}</div>'
        return f'<pre class="fw-lr-code">{html.escape(str(config))}</pre>'
