"""Toolbar: filter, expand/collapse, freeze/unfreeze all, BatchNorm policy, code view, spec file."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from freeze_widgets.freezing.bn import BN_POLICIES

__all__ = ["Toolbar"]

_BN_HELP = {
    "eval": "eval: frozen BatchNorm stays in eval mode, even after model.train()",
    "frozen": "frozen: swap frozen BatchNorm for FrozenBatchNorm (fixed statistics)",
    "train": "train: running statistics keep updating (plain requires_grad=False)",
}


KEYS_HELP = (
    "Tree keys: Up/Down move, Right expands, Left collapses, Space or Enter ticks (freeze), "
    "U freezes everything up to and including the focused row (shown on that row)"
)


class _Shared:
    """One Layout and one style per kind, shared by the toolbar's widgets.

    Every Layout and style is a widget model of its own, and each model is a comm round trip
    before the browser can render: sharing them keeps the explorer quick to appear.
    """

    # Over 60 lines on purpose: a widget's children are built in one place and read
    # whole, in the order they appear on screen.
    def __init__(self) -> None:
        # flex 0 0 auto: a narrow notebook wraps the row instead of cutting labels ("expan...").
        self.auto = widgets.Layout(width="auto", flex="0 0 auto")
        self.plain = widgets.Layout()
        self.wrap = widgets.Layout(flex_flow="row wrap")
        self.button = widgets.ButtonStyle()

    def button_(self, description: str, tooltip: str, css: str, icon: str = "") -> widgets.Button:
        button = widgets.Button(
            description=description, tooltip=tooltip, icon=icon, layout=self.auto, style=self.button
        )
        button.add_class(css)
        return button


class Toolbar(widgets.VBox):
    """The controls above the tree; the explorer wires their events to the core."""

    def __init__(self, spec_path: str = "freeze_spec.json", **kwargs: Any) -> None:
        shared = _Shared()
        _button = shared.button_
        self.filter = widgets.Text(
            placeholder="filter: layer3, conv, *.bn1",
            continuous_update=True,
            layout=widgets.Layout(width="220px", flex="0 0 auto"),
        )
        self.filter.add_class("fw-filter")
        self.expand = _button("expand all", "Show every row", "fw-expand-all")
        self.collapse = _button("collapse all", "Show only the top level", "fw-collapse-all")
        self.freeze_all = _button("freeze all", "Freeze the whole model", "fw-freeze-all", "lock")
        self.unfreeze_all = _button(
            "unfreeze all", "Make every parameter trainable", "fw-unfreeze-all", "unlock"
        )
        bn_help = "\n".join(_BN_HELP.values())
        # ipywidgets shows a tooltip only on widgets without a description: the label is a
        # separate widget carrying the same help, so hovering either one explains the choice.
        self.bn_label = widgets.Label("BatchNorm", tooltip=bn_help)
        self.bn_label.add_class("fw-bn-label")
        self.bn = widgets.Dropdown(
            options=list(BN_POLICIES),
            value="eval",
            tooltip=bn_help,
            layout=widgets.Layout(width="110px", flex="0 0 auto"),
        )
        self.bn.add_class("fw-bn-policy")
        self.trainable_only = widgets.ToggleButton(
            description="trainable only",
            tooltip="Show only what trains (adapters, unfrozen layers) and the rows around it",
            icon="filter",
            layout=shared.auto,
        )
        self.trainable_only.add_class("fw-trainable-only")
        self.code = widgets.ToggleButton(
            description="code",
            tooltip="Plain PyTorch that reproduces this freeze",
            icon="code",
            layout=shared.auto,
        )
        self.code.add_class("fw-code-toggle")
        self.spec_path = widgets.Text(
            value=spec_path,
            description="spec",
            layout=widgets.Layout(width="260px", flex="0 0 auto"),
        )
        self.spec_path.style.description_width = "36px"
        self.spec_path.add_class("fw-spec-path")
        self.save = _button("save", "Save the freeze as FreezeSpec JSON", "fw-spec-save", "save")
        self.load = _button("load", "Load a FreezeSpec JSON file", "fw-spec-load", "folder-open")
        row1 = widgets.HBox(
            [
                self.filter,
                self.trainable_only,
                self.expand,
                self.collapse,
                self.freeze_all,
                self.unfreeze_all,
            ],
            layout=shared.wrap,
        )
        self.help = widgets.HTML(
            f'<span class="fw-help" title="{KEYS_HELP}" style="cursor:help">keys (?)</span>'
        )
        row2 = widgets.HBox(
            [self.bn_label, self.bn, self.code, self.spec_path, self.save, self.load, self.help],
            layout=shared.wrap,
        )
        super().__init__([row1, row2], layout=shared.plain, **kwargs)
        self.add_class("fw-toolbar")

    @property
    def model_changers(self) -> list[widgets.Widget]:
        """The controls that change the model (disabled while a run holds it)."""
        return [self.freeze_all, self.unfreeze_all, self.bn, self.load]
