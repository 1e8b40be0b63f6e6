"""The explorer's panel area: open buttons, lazily built panels, and their shared busy state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from torch import nn

from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.ui.background import BusyState
from freeze_widgets.ui.export_panel import ExportPanel
from freeze_widgets.ui.finetune_panel import FineTunePanel
from freeze_widgets.ui.lifecycle import close_created, close_widget_tree, track_created
from freeze_widgets.ui.lr_dial import LrDial
from freeze_widgets.ui.panel_common import meta_tooltip

__all__ = ["META_TOOLTIP", "PanelsHost"]

META_TOOLTIP = meta_tooltip("train or export")
_STOP_WAIT_S = 2.0


class PanelsHost(widgets.VBox):
    """Open buttons and the fine-tune / export panels, each built on first open.

    The panels hold most of the explorer's widget models; building them on first open keeps
    the tree quick to render (each widget is a comm round trip for the browser). Both panels
    hold ``busy`` while they run, so the explorer refuses model changes meanwhile.
    """

    def __init__(
        self,
        get_model: Callable[[], nn.Module],
        busy: BusyState,
        *,
        on_finetune_finished: Callable[[Any], None],
        get_bn_policy: Callable[[], str],
        meta: bool = False,
        data: Any = None,
    ) -> None:
        self._get_model = get_model
        self._data = data
        self._busy = busy
        self._on_finetune_finished = on_finetune_finished
        self._get_bn_policy = get_bn_policy
        self._finetune: FineTunePanel | None = None
        self._export: ExportPanel | None = None
        self._lr_dial: LrDial | None = None
        self._made: dict[str, Any] = {}  # every widget the panels made, for shutdown()
        self._sections: dict[str, widgets.Widget] = {}
        auto = widgets.Layout(width="auto")
        self.open_finetune = widgets.ToggleButton(
            layout=auto,
            description="fine-tune",
            icon="graduation-cap",
            tooltip="Demo fine-tune that proves the freeze held",
        )
        self.open_finetune.add_class("fw-open-finetune")
        self.open_export = widgets.ToggleButton(
            layout=auto,
            description="export",
            icon="download",
            tooltip="Partial-bound ONNX export, verified; Netron",
        )
        self.open_export.add_class("fw-open-export")
        self.open_lr = widgets.ToggleButton(
            layout=auto,
            description="lr ×",
            tooltip="Learning-rate multipliers beside the freeze (the fine-tune uses them)",
        )
        self.open_lr.add_class("fw-open-lr")
        if meta:
            for toggle in (self.open_finetune, self.open_export):
                toggle.disabled = True
                toggle.tooltip = META_TOOLTIP
        plain = widgets.Layout()
        self._panel_box = widgets.VBox(layout=plain)
        buttons = widgets.HBox([self.open_finetune, self.open_export, self.open_lr], layout=plain)
        super().__init__([buttons, self._panel_box], layout=plain)
        self.add_class("fw-panels")
        self.open_finetune.observe(self._show, names="value")
        self.open_export.observe(self._show, names="value")
        self.open_lr.observe(self._show, names="value")

    @property
    def finetune(self) -> FineTunePanel:
        if self._finetune is None:
            with track_created(self._made):
                panel = FineTunePanel(
                    self._get_model,
                    on_finished=self._on_finetune_finished,
                    get_bn_policy=self._get_bn_policy,
                    get_lr_groups=self._lr_groups,
                    data=self._data,
                )
            panel.busy = self._busy
            panel.busy_reason = "a fine-tune is running"
            self._finetune = panel
        return self._finetune

    @property
    def export(self) -> ExportPanel:
        if self._export is None:
            with track_created(self._made):
                panel = ExportPanel(self._get_model)
            panel.busy = self._busy
            panel.busy_reason = "an export is running"
            self._export = panel
        return self._export

    @property
    def lr_dial(self) -> LrDial:
        """The "lr ×" control (built on first use); the fine-tune reads its multipliers."""
        if self._lr_dial is None:
            with track_created(self._made):
                self._lr_dial = LrDial(self._get_model())
        return self._lr_dial

    def _lr_groups(self) -> dict[str, Any] | None:
        """The dial's multipliers as ``finetune(lr_groups=...)``; None when unset or all 1."""
        if self._lr_dial is None:
            return None
        self._lr_dial.refresh()  # the freeze may have changed since it was drawn
        mults = self._lr_dial.multipliers
        return {"lr_mult": mults} if any(v != 1 for v in mults.values()) else None

    def with_lr(self, spec: FreezeSpec) -> FreezeSpec:
        """``spec`` with the "lr ×" multipliers when any is set (saved as ``lr_mult``)."""
        groups = self._lr_groups()
        if groups is None:
            return spec
        return FreezeSpec(spec.frozen, spec.bn, lr_mult=tuple(groups["lr_mult"].items()))

    def load_lr(self, spec: FreezeSpec) -> None:
        """Show a loaded spec's multipliers in the "lr ×" control (as rows set by hand)."""
        if spec.lr_mult or self._lr_dial is not None:
            self.lr_dial.mode.value = "uniform"
            self.lr_dial.edits = dict(spec.lr_mult)
            self.lr_dial.refresh()

    def after_freeze_change(self) -> None:
        """Redraw the "lr ×" rows if that control is open (frozen rows read 0)."""
        if self._lr_dial is not None and self.open_lr.value:
            self._lr_dial.refresh()

    def show_busy(self, busy: bool) -> None:
        """Grey out the Run buttons of the panels not running (one run holds the model at once).

        A click there would be refused by the busy state anyway (the panel's run would not
        start); disabling says so before the click.
        """
        for panel in self.built():
            if not panel.running:
                panel.run_button.disabled = busy

    def built(self) -> list[FineTunePanel | ExportPanel]:
        return [p for p in (self._finetune, self._export) if p is not None]

    def _section(self, key: str, title: str) -> widgets.Widget:
        """The panel under its heading, built once (re-toggling reuses it)."""
        if key not in self._sections:
            panel: widgets.Widget = (
                self.finetune
                if key == "finetune"
                else self.export
                if key == "export"
                else self.lr_dial
            )
            with track_created(self._made):
                heading = widgets.HTML(f'<h4 style="margin:10px 0 4px">{title}</h4>')
                self._sections[key] = widgets.VBox([heading, panel])
        return self._sections[key]

    def _show(self, _change: Any = None) -> None:
        sections = []
        if self.open_finetune.value:
            title = "Demo fine-tune: a short real run that respects the freeze"
            sections.append(self._section("finetune", title))
        if self.open_export.value:
            sections.append(
                self._section("export", "Partial-bound export, verified with onnxruntime")
            )
        if self.open_lr.value:
            self.lr_dial.refresh()  # rows frozen since it was last drawn read 0
            sections.append(self._section("lr", "Learning rates beside the freeze (lr ×)"))
        self._panel_box.children = sections

    def shutdown(self) -> None:
        """Stop runs (briefly waiting for their daemon threads), Netron servers, and widgets."""
        for panel in self.built():
            stop = getattr(panel, "stop", None)
            if panel.running and callable(stop):
                stop()
            panel.wait(_STOP_WAIT_S)
            netron = getattr(panel, "shutdown", None)
            if callable(netron):
                netron()  # the export panel's Netron servers
            close_widget_tree(panel)
        close_created(self._made)
        self._sections.clear()
        if self._lr_dial is not None:
            close_widget_tree(self._lr_dial)
        self._finetune = self._export = self._lr_dial = None
        close_widget_tree(self)
