"""FreezeExplorer: the model tree with tick-to-freeze, live counts, and the action panels."""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ipywidgets as widgets
import torch
from torch import nn

from ..models import load_model, weights_source
from ..spec import FreezeSpec
from ..tree import ModuleTree, Node, NodeState, ParamCounts
from .export_panel import ExportPanel
from .finetune_panel import FineTunePanel
from .header import Header
from .messages import MessageArea
from .payload import filter_visible
from .toolbar import Toolbar
from .tree_widget import TreeWidget

__all__ = ["FreezeExplorer", "explore"]

F = TypeVar("F", bound=Callable[..., Any])


def _guarded(context: str) -> Callable[[F], F]:
    """Show any error of a UI handler as one line in the message area, then resync the view.

    Exceptions inside widget callbacks are otherwise only logged, invisible in the notebook.
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(self: FreezeExplorer, *args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(self, *args, **kwargs)
            except Exception as exc:
                self.messages.error(exc, context)
                self._resync()
                return None
            return result

        return run  # type: ignore[return-value]

    return wrap


class FreezeExplorer(widgets.VBox):
    """Tick modules to freeze them; every count on screen follows at once.

    Args:
        model: Any ``nn.Module``; changed in place by the ticks.
        title: Header title (default: the model's class name).
        spec_path: Default file for saving and loading the freeze spec.

    Example:
        >>> from torchvision.models import resnet18
        >>> ex = FreezeExplorer(resnet18())
        >>> ex.tick("layer1")
        >>> ex.state("layer1"), ex.state("")
        ('frozen', 'partial')
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        title: str | None = None,
        spec_path: str = "freeze_spec.json",
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"FreezeExplorer needs a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.tree = ModuleTree(model)
        source = weights_source(model)
        note = f"Weights: {source}" if source.startswith(("random:", "none")) else ""
        self.header = Header(title or type(model).__name__, note)
        self.toolbar = Toolbar(spec_path=spec_path)
        self.tree_view = TreeWidget()
        self.messages = MessageArea()
        self.code_view = widgets.HTML(layout=widgets.Layout(display="none"))
        self.code_view.add_class("fw-code")
        self.panels = self._make_panels()
        super().__init__(
            [self.header, self.toolbar, self.tree_view, self.messages, self.code_view, self.panels],
            **kwargs,
        )
        self.add_class("fw-explorer")
        self._wire()
        self._resync()

    # ------------------------------------------------------------------ building

    def _make_panels(self) -> widgets.Widget:
        # The panels hold most of the explorer's widget models; build each on first open so
        # the tree renders fast (each widget is a comm round trip for the browser).
        self._finetune: FineTunePanel | None = None
        self._export: ExportPanel | None = None
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
        plain = widgets.Layout()
        self._panel_box = widgets.VBox(layout=plain)
        box = widgets.VBox(
            [widgets.HBox([self.open_finetune, self.open_export], layout=plain), self._panel_box],
            layout=plain,
        )
        box.add_class("fw-panels")
        return box

    @property
    def finetune(self) -> FineTunePanel:
        """The fine-tune panel (built on first use)."""
        if self._finetune is None:
            self._finetune = FineTunePanel(
                lambda: self.model,
                on_finished=self._on_finetune_finished,
                get_bn_policy=lambda: self.bn_policy,
            )
            # No ticks while a run is training the model in its thread.
            self._finetune.run_button.observe(self._on_finetune_running, names="disabled")
        return self._finetune

    @property
    def export(self) -> ExportPanel:
        """The export panel (built on first use)."""
        if self._export is None:
            self._export = ExportPanel(lambda: self.model)
        return self._export

    def _show_panels(self, _change: Any = None) -> None:
        sections = []
        for toggle, title, make in (
            (
                self.open_finetune,
                "Demo fine-tune: a short real run that respects the freeze",
                lambda: self.finetune,
            ),
            (
                self.open_export,
                "Partial-bound export, verified with onnxruntime",
                lambda: self.export,
            ),
        ):
            if toggle.value:
                heading = widgets.HTML(f'<h4 style="margin:10px 0 4px">{title}</h4>')
                sections.append(widgets.VBox([heading, make()]))
        self._panel_box.children = sections

    def _wire(self) -> None:
        self.tree_view.on("tick", self._on_tick)
        self.tree_view.on("freeze_to", self._on_freeze_to)
        tb = self.toolbar
        tb.filter.observe(self._on_filter, names="value")
        tb.expand.on_click(lambda _b: self.tree_view.expand_all(True))
        tb.collapse.on_click(lambda _b: self.tree_view.expand_all(False))
        tb.freeze_all.on_click(lambda _b: self._on_tick({"path": "", "frozen": True}))
        tb.unfreeze_all.on_click(lambda _b: self._on_tick({"path": "", "frozen": False}))
        tb.bn.observe(self._on_bn_policy, names="value")
        tb.code.observe(self._on_code_toggle, names="value")
        tb.save.on_click(self._on_save)
        tb.load.on_click(self._on_load)
        self.open_finetune.observe(self._show_panels, names="value")
        self.open_export.observe(self._show_panels, names="value")

    # ------------------------------------------------------------------ handles for tests/scripts

    def tick(self, path: str, frozen: bool = True) -> None:
        """Tick (freeze) or untick a row exactly as a click in the browser does."""
        message = {"type": "tick", "path": path, "frozen": bool(frozen)}
        self.tree_view._on_msg(self.tree_view, message, [])

    def state(self, path: str) -> NodeState:
        """The node's state as displayed: "trainable", "frozen", "partial" or "empty"."""
        state: NodeState = self.tree_view.rows[self.tree.node(path).index]["st"]
        return state

    @property
    def counts(self) -> ParamCounts:
        """The counts currently displayed in the header."""
        return self.header.counts

    @property
    def bn_policy(self) -> str:
        return str(self.toolbar.bn.value)

    def refresh(self) -> None:
        """Re-read the model after it was changed in another cell (``requires_grad``, modules)."""
        self.tree.refresh()
        self._resync()

    def spec(self) -> FreezeSpec:
        """The current freeze as a :class:`FreezeSpec`."""
        return FreezeSpec.from_model(self.model, bn=self.bn_policy)

    def close(self) -> None:
        """Close the widgets and stop any Netron server this explorer started."""
        for name in ("_export", "tree_view"):
            stop = getattr(getattr(self, name, None), "shutdown", None)
            if callable(stop):
                stop()
        super().close()

    # ------------------------------------------------------------------ view updates

    def _resync(self) -> None:
        """Full reload of every view from the tree (build, refresh, after an error)."""
        self.tree_view.load(self.tree)
        self.tree_view.show_only(filter_visible(self.tree, self.toolbar.filter.value))
        self._after_change()

    def _after_change(self) -> None:
        self.header.show(self.tree.counts)
        if self.toolbar.code.value:
            self._show_code()

    def _apply(self, changed: list[Node]) -> None:
        if changed:
            self.tree_view.send_delta(changed)
        self._after_change()

    def _show_code(self) -> None:
        code = self.spec().to_code()
        self.code_view.value = (
            '<pre style="font-size:0.9em;background:var(--jp-layout-color2,#f5f5f5);'
            f'padding:6px;border-radius:4px;white-space:pre">{html.escape(code)}</pre>'
        )

    # ------------------------------------------------------------------ handlers

    @_guarded("freeze")
    def _on_tick(self, content: dict[str, Any]) -> None:
        path = content.get("path")
        if not isinstance(path, str):
            raise ValueError(f"tick message without a path: {content!r}")
        self._check_idle()
        changed = self.tree.set_frozen(path, bool(content.get("frozen", True)), bn=self.bn_policy)
        self.messages.clear()
        self._apply(changed)

    def _check_idle(self) -> None:
        if (self._finetune is not None and self._finetune.running) or self.tree_view.disabled:
            raise RuntimeError(
                "the model is busy (a fine-tune is running); tick again when it ends"
            )

    @_guarded("freeze up to here")
    def _on_freeze_to(self, content: dict[str, Any]) -> None:
        path = content.get("path")
        if not isinstance(path, str):
            raise ValueError(f"freeze_to message without a path: {content!r}")
        self._check_idle()
        changed = self.tree.freeze_through(path, bn=self.bn_policy)
        self.messages.info(
            f"froze everything up to and including {path or 'the model'}; the rest trains"
        )
        self._apply(changed)

    def _on_finetune_running(self, change: dict[str, Any]) -> None:
        self.tree_view.disabled = bool(change["new"])

    @_guarded("after fine-tune")
    def _on_finetune_finished(self, _report: Any) -> None:
        # The run may have replaced the head or unfrozen groups: re-read the model.
        self.refresh()

    @_guarded("filter")
    def _on_filter(self, change: dict[str, Any]) -> None:
        self.tree_view.show_only(filter_visible(self.tree, str(change["new"])))

    @_guarded("BatchNorm policy")
    def _on_bn_policy(self, change: dict[str, Any]) -> None:
        self._apply(self.tree.set_bn_policy(str(change["new"])))
        self.messages.info(f"BatchNorm policy {change['new']!r} applied to frozen BatchNorm layers")

    @_guarded("code view")
    def _on_code_toggle(self, change: dict[str, Any]) -> None:
        self.code_view.layout.display = "" if change["new"] else "none"
        if change["new"]:
            self._show_code()

    @_guarded("save spec")
    def _on_save(self, _button: Any = None) -> None:
        path = Path(self.toolbar.spec_path.value).expanduser()
        if not path.parent.exists():
            raise FileNotFoundError(f"folder {path.parent} does not exist; choose another path")
        spec = self.spec()
        path.write_text(spec.to_json(), encoding="utf-8")
        self.messages.info(f"saved {len(spec.frozen)} frozen paths to {path}")

    @_guarded("load spec")
    def _on_load(self, _button: Any = None) -> None:
        path = Path(self.toolbar.spec_path.value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no spec file at {path}; save one first or fix the path")
        spec = FreezeSpec.from_json(path.read_text(encoding="utf-8"))
        spec.apply(self.model)  # validates every path before changing anything
        with self.toolbar.bn.hold_trait_notifications():
            self.toolbar.bn.unobserve(self._on_bn_policy, names="value")
            self.toolbar.bn.value = spec.bn
            self.toolbar.bn.observe(self._on_bn_policy, names="value")
        self.tree.refresh()
        self._resync()
        self.messages.info(f"loaded {len(spec.frozen)} frozen paths from {path}")


def explore(
    model: nn.Module | str,
    *,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    **kwargs: Any,
) -> FreezeExplorer:
    """Open an explorer on a model or a torchvision model name (``explore("resnet50")``)."""
    if isinstance(model, str):
        title = kwargs.pop("title", model)
        model = load_model(model, pretrained=pretrained, device=device)
        return FreezeExplorer(model, title=title, **kwargs)
    return FreezeExplorer(model, **kwargs)
