"""FreezeExplorer: the model tree with tick-to-freeze, live counts, and the action panels."""

from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import torch
from torch import nn

from freeze_widgets.base.checks import BnPolicy, check_bn_policy, on_meta_device
from freeze_widgets.cost.estimate import CostEstimate, estimate_cost
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.models.vision import load_model
from freeze_widgets.models.weights import (
    WEIGHTS_HINT_ATTR,
    PretrainedWeightsUnavailable,
    weights_source,
)
from freeze_widgets.tree import ModuleTree, Node, NodeState, ParamCounts
from freeze_widgets.ui.background import BusyState
from freeze_widgets.ui.config_view import ConfigView
from freeze_widgets.ui.cost_line import LiveCost
from freeze_widgets.ui.export_panel import ExportPanel
from freeze_widgets.ui.finetune_panel import FineTunePanel
from freeze_widgets.ui.guarded import ModelBusy, guarded
from freeze_widgets.ui.header import Header, weights_notice
from freeze_widgets.ui.lifecycle import close_widget_tree, current_cell_id, remember, take_previous
from freeze_widgets.ui.messages import MessageArea
from freeze_widgets.ui.panels_host import PanelsHost
from freeze_widgets.ui.payload import visible_rows
from freeze_widgets.ui.shapes import ShapeCache
from freeze_widgets.ui.staleness import ModelChanged, StructureWatch
from freeze_widgets.ui.toolbar import Toolbar
from freeze_widgets.ui.tree_widget import TreeWidget

__all__ = ["FreezeExplorer", "ModelBusy", "explore"]


class FreezeExplorer(widgets.VBox):
    """Tick modules to freeze them; every count on screen follows at once.

    While a fine-tune or an export runs (one :class:`BusyState`, held by the panels), every
    action that changes the model is refused with one line saying why; the filter,
    expand/collapse and the code view keep working. :meth:`close` releases everything.

    Args:
        model: Any ``nn.Module``; changed in place by the ticks.
        title: Header title (default: the model's class name).
        spec_path: Default file for saving and loading the freeze spec.
        model_name: The name the model was loaded by (says where its weights file goes).
        data: What the demo fine-tune trains on (a Dataset, a DataLoader, ``"digits"`` or an
            ImageFolder path); None: synthetic shapes, or what is typed in its data field.

    Example:
        >>> from torchvision.models import resnet18
        >>> ex = FreezeExplorer(resnet18())
        >>> ex.tick("layer1")
        >>> ex.state("layer1"), ex.state("")
        ('frozen', 'partial')
    """

    # Over 60 lines on purpose: a widget's children are built in one place and read
    # whole, in the order they appear on screen.
    def __init__(
        self,
        model: nn.Module,
        *,
        title: str | None = None,
        spec_path: str = "freeze_spec.json",
        model_name: str | None = None,
        data: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"FreezeExplorer needs a torch.nn.Module, got {type(model).__name__}")
        self._model: nn.Module | None = model
        self._tree: ModuleTree | None = ModuleTree(model)
        self._watch: StructureWatch | None = StructureWatch(model)
        self._shapes = ShapeCache()  # output shapes per row, from a meta-device forward
        self._cost: LiveCost | None = LiveCost(model)
        self._busy = BusyState()
        self._busy_note = ""
        source = weights_source(model)
        hint = getattr(model, WEIGHTS_HINT_ATTR, None)
        notice = weights_notice(source, model_name, hint)
        self.header = Header(title or type(model).__name__, notice)
        self.header.note_detail = source
        self.toolbar = Toolbar(spec_path=spec_path)
        self.tree_view = TreeWidget()
        self.messages = MessageArea()
        self.code_view = widgets.HTML()
        self.code_view.add_class("fw-code")
        self.config_view = ConfigView(  # the code view with a target selector (issue 22)
            self.code_view,
            self.tree_view,
            self.messages,
            lambda: self.model,
            self.spec,
            self._apply_spec,
            self._show_code,
        )
        self.panels = PanelsHost(
            lambda: self.model,
            self._busy,
            on_finetune_finished=self._on_finetune_finished,
            get_bn_policy=lambda: self.bn_policy,
            meta=on_meta_device(model),
            data=data,
        )
        self.open_finetune = self.panels.open_finetune
        self.open_export = self.panels.open_export
        super().__init__(
            [
                self.header,
                self.toolbar,
                self.tree_view,
                self.messages,
                self.config_view,
                self.panels,
            ],
            **kwargs,
        )
        self.add_class("fw-explorer")
        self._wire()
        self._resync()

    def _wire(self) -> None:
        self._busy.observe(self._on_busy)
        self.tree_view.on("tick", self._on_tick)
        self.tree_view.on("freeze_to", self._on_freeze_to)
        tb = self.toolbar
        tb.filter.observe(self._on_filter, names="value")
        tb.trainable_only.observe(lambda _c: self._on_filter({"new": tb.filter.value}), "value")
        tb.expand.on_click(lambda _b: self.tree_view.expand_all(True))
        tb.collapse.on_click(lambda _b: self.tree_view.expand_all(False))
        tb.freeze_all.on_click(lambda _b: self._on_tick({"path": "", "frozen": True}))
        tb.unfreeze_all.on_click(lambda _b: self._on_tick({"path": "", "frozen": False}))
        tb.bn.observe(self._on_bn_policy, names="value")
        tb.code.observe(self._on_code_toggle, names="value")
        tb.save.on_click(self._on_save)
        tb.load.on_click(self._on_load)

    # ------------------------------------------------------------------ handles for tests/scripts

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            raise RuntimeError("this explorer was closed; open a new one with explore(model)")
        return self._model

    @property
    def tree(self) -> ModuleTree:
        if self._tree is None:
            raise RuntimeError("this explorer was closed; open a new one with explore(model)")
        return self._tree

    @property
    def watch(self) -> StructureWatch:
        """Notices the model changed outside the explorer (``staleness.StructureWatch``)."""
        if self._watch is None:
            raise RuntimeError("this explorer was closed; open a new one with explore(model)")
        return self._watch

    @property
    def busy(self) -> BusyState:
        """The one busy state the panels hold while they run (``busy.reason`` says which)."""
        return self._busy

    @property
    def finetune(self) -> FineTunePanel:
        """The fine-tune panel (built on first use)."""
        return self.panels.finetune

    @property
    def export(self) -> ExportPanel:
        """The export panel (built on first use)."""
        return self.panels.export

    def tick(self, path: str, frozen: bool = True) -> None:
        """Tick (freeze) or untick a row exactly as a click in the browser does."""
        message = {"type": "tick", "path": path, "frozen": bool(frozen)}
        self.tree_view.receive(message)

    def freeze_up_to(self, path: str) -> None:
        """ "Freeze up to here" on a row, exactly as its button (or key U) in the browser does."""
        self.tree_view.receive({"type": "freeze_to", "path": path})

    def state(self, path: str) -> NodeState:
        """The node's state as displayed: "trainable", "frozen", "partial" or "empty"."""
        state: NodeState = self.tree_view.rows[self.tree.node(path).index]["st"]
        return state

    @property
    def counts(self) -> ParamCounts:
        """The counts currently displayed in the header."""
        return self.header.counts

    @property
    def bn_policy(self) -> BnPolicy:
        return check_bn_policy(self.toolbar.bn.value) or "eval"  # the toolbar offers policies only

    def cost(self, optimizer: str = "adamw", **kwargs: Any) -> CostEstimate:
        """The full training-memory estimate, activations included (one meta forward)."""
        return estimate_cost(self.model, optimizer, **kwargs)

    def refresh(self) -> None:
        """Re-read the model after it was changed in another cell (``requires_grad``, modules)."""
        self.tree.refresh()
        self.watch.reset(self.model)
        if self._cost is not None:
            self._cost.reload()
        self._resync()

    def spec(self) -> FreezeSpec:
        """The current freeze as a :class:`FreezeSpec` (with the "lr ×" multipliers, if set)."""
        return self.panels.with_lr(FreezeSpec.from_model(self.model, bn=self.bn_policy))

    def close(self) -> None:
        """Close every widget this explorer made, stop its runs and servers, drop the model.

        Running fine-tunes are asked to stop and waited for briefly (their threads are daemon
        threads); the graph views close. Afterwards the explorer
        holds no reference to the model, so the model can be garbage collected.
        """
        if getattr(self, "_model", None) is None:  # closed already, or a failed __init__
            super().close()
            return
        for part, stop in (("panels", "shutdown"), ("_busy", "clear_listeners")):
            getattr(getattr(self, part, None), stop, lambda: None)()  # None after a failed init
        if hasattr(self, "tree_view"):
            self.tree_view.clear_handlers()
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.close()  # its global registration hooks go with the explorer
        self._model = self._tree = self._cost = self._watch = None
        close_widget_tree(self)  # calls self.close() again: the branch above, then VBox's

    # ------------------------------------------------------------------ view updates

    def _resync(self) -> None:
        """Full reload of every view from the tree (build, refresh, after an error)."""
        if self._tree is None:
            return
        self.tree_view.load(self.tree, self._shapes.get(self.model, self.watch.key))
        self._show_filter(self.toolbar.filter.value)
        self._after_change()

    def _after_change(self) -> None:
        counts = self.tree.counts
        self.header.show(counts, self._cost.line(counts) if self._cost is not None else ("", ""))
        if self.toolbar.code.value:
            self._show_code()
        self.panels.after_freeze_change()  # the "lr ×" rows of newly frozen layers read 0

    def _apply(self, changed: list[Node]) -> None:
        self.watch.acknowledge(self.model)  # our own changes (a BatchNorm swap) are known
        if changed:
            self.tree_view.send_delta(changed)
            if self.toolbar.trainable_only.value:  # what trains changed: so does the view
                self._show_filter(self.toolbar.filter.value)
            swapped = self.bn_policy == "frozen" and any(
                "BatchNorm" in n.type_name for n in changed
            )
            if swapped and self._cost is not None:
                self._cost.reload()  # a BatchNorm swap turned parameters into buffers
        self._after_change()

    def _show_code(self) -> None:
        if self.config_view.render():  # a trainer's config is chosen instead of PyTorch code
            return
        code = self.spec().to_code()
        if self._cost is not None:  # what this freeze costs, and on which assumptions
            line, assumptions = self._cost.line(self.counts)
            notes = [line, *assumptions.splitlines()] if line else []
            code += "".join(f"\n# {note}" for note in notes)
        self.code_view.value = (
            '<pre style="font-size:0.9em;background:var(--jp-layout-color2,#f5f5f5);'
            f'padding:6px;border-radius:4px;white-space:pre">{html.escape(code)}</pre>'
        )

    def _show_filter(self, text: str) -> None:
        visible, note = visible_rows(self.tree, text, self.toolbar.trainable_only.value)
        self.tree_view.show_only(visible)
        self.tree_view.note = note

    # ------------------------------------------------------------------ busy state

    def _check_current(self) -> None:
        """Refuse (after re-reading the model) when it changed outside the explorer."""
        if self.watch.changed(self.model):
            self.refresh()
            raise ModelChanged(
                "the model was changed outside the explorer (a module or parameter replaced) "
                "since its tree was built; the tree now shows the model as it is: try again"
            )

    def _check_idle(self) -> None:
        self._check_current()
        reason = self._busy.reason
        if reason is not None:
            raise ModelBusy(
                f"{reason}, and the model must not change under it; try again when it ends "
                "(filter, expand/collapse and the code view still work)"
            )

    def _on_busy(self, reason: str | None) -> None:
        # Called from the run's thread: only trait changes here, each one a plain message.
        busy = reason is not None
        self.tree_view.disabled = busy
        for control in self.toolbar.model_changers:
            control.disabled = busy
        self.panels.show_busy(busy)
        if busy:
            self._busy_note = f"{reason}: ticks and other model changes are refused until it ends"
            self.messages.info(self._busy_note)
        else:
            # The busy line and any refusal it caused are out of date once the run ends.
            shown = html.unescape(self.messages.value)
            if "fw-refused" in shown or (self._busy_note and self._busy_note in shown):
                self.messages.clear()
            self._busy_note = ""

    # ------------------------------------------------------------------ handlers

    @guarded("freeze")
    def _on_tick(self, content: dict[str, Any]) -> None:
        path = content.get("path")
        if not isinstance(path, str):
            raise ValueError(f"tick message without a path: {content!r}")
        self._check_idle()
        changed = self.tree.set_frozen(path, bool(content.get("frozen", True)), bn=self.bn_policy)
        self.messages.clear()
        self._apply(changed)

    @guarded("freeze up to here")
    def _on_freeze_to(self, content: dict[str, Any]) -> None:
        path = content.get("path")
        if not isinstance(path, str):
            raise ValueError(f"freeze_to message without a path: {content!r}")
        self._check_idle()
        changed = self.tree.freeze_through(path, bn=self.bn_policy)
        counts = self.tree.counts
        rest = (
            f"the rest trains ({counts.trainable:,} parameters)"
            if counts.trainable
            else "nothing is left to train: every parameter is frozen"
        )
        self.messages.info(f"froze everything up to and including {path or 'the model'}; {rest}")
        self._apply(changed)

    @guarded("after fine-tune")
    def _on_finetune_finished(self, _report: Any) -> None:
        # The run may have replaced the head or unfrozen groups: re-read the model.
        self.refresh()

    @guarded("filter")
    def _on_filter(self, change: dict[str, Any]) -> None:
        self._show_filter(str(change["new"]))

    def _set_bn_quietly(self, value: str) -> None:
        self.toolbar.bn.unobserve(self._on_bn_policy, names="value")
        try:
            self.toolbar.bn.value = value
        finally:
            self.toolbar.bn.observe(self._on_bn_policy, names="value")

    @guarded("BatchNorm policy")
    def _on_bn_policy(self, change: dict[str, Any]) -> None:
        try:
            self._check_idle()
            changed = self.tree.set_bn_policy(check_bn_policy(change["new"]) or "eval")
        except Exception:
            self._set_bn_quietly(str(change["old"]))  # never left showing a policy not applied
            raise
        if self._cost is not None:
            self._cost.reload()
        self._apply(changed)
        self.messages.info(f"BatchNorm policy {change['new']!r} applied to frozen BatchNorm layers")

    @guarded("code view")
    def _on_code_toggle(self, change: dict[str, Any]) -> None:
        self.config_view.layout.display = "" if change["new"] else "none"
        if change["new"]:
            self._show_code()

    @guarded("save spec")
    def _on_save(self, _button: Any = None) -> None:
        path = Path(self.toolbar.spec_path.value).expanduser()
        if not path.parent.exists():
            raise FileNotFoundError(f"folder {path.parent} does not exist; choose another path")
        spec = self.spec()
        path.write_text(spec.to_json(), encoding="utf-8")
        self.messages.info(f"saved {len(spec.frozen)} frozen paths to {path}")

    @guarded("load spec")
    def _on_load(self, _button: Any = None) -> None:
        self._check_idle()
        path = Path(self.toolbar.spec_path.value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no spec file at {path}; save one first or fix the path")
        spec = FreezeSpec.from_json(path.read_text(encoding="utf-8"))
        self._apply_spec(spec)
        self.messages.info(f"loaded {len(spec.frozen)} frozen paths from {path}")

    def _apply_spec(self, spec: FreezeSpec) -> None:
        self._check_idle()
        spec.apply(self.model)  # validates every path before changing anything
        self._set_bn_quietly(spec.bn)
        self.panels.load_lr(spec)
        self.refresh()


def explore(
    model: nn.Module | str,
    *,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    **kwargs: Any,
) -> FreezeExplorer:
    """Open an explorer on a model or a torchvision model name (``explore("resnet50")``).

    The explorer this function returned before for the same model object, or from the same
    notebook cell (re-running it), is closed first, so re-running a cell releases the old
    model instead of keeping it alive behind a hidden widget. Explorers built directly with
    ``FreezeExplorer(...)`` are the caller's to close.
    """
    cell = current_cell_id()
    if isinstance(model, str):
        name = model
        for old in take_previous(None, cell):
            old.close()  # before loading: the old model's memory is free for the new one
        kwargs.setdefault("title", name)
        with warnings.catch_warnings():
            # Said once, in the explorer's header (weights_notice), not also as a stderr box.
            warnings.simplefilter("ignore", PretrainedWeightsUnavailable)
            model = load_model(name, pretrained=pretrained, device=device)
        kwargs.setdefault("model_name", name)
    for old in take_previous(model, cell):
        old.close()
    explorer = FreezeExplorer(model, **kwargs)
    remember(explorer, model, cell)
    return explorer
