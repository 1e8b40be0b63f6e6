"""Export panel: mark forward() arguments as inputs or bound constants, export, verify, Netron."""

from __future__ import annotations

import html
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import torch
from torch import nn

from freeze_widgets.base.checks import on_meta_device
from freeze_widgets.export import BoundModule, ExportReport, bind, export_onnx, export_torchscript
from freeze_widgets.export.binding import unwrap_model
from freeze_widgets.ui.background import BackgroundWork
from freeze_widgets.ui.export_args import (
    ArgRow,
    default_input_shape,
    example_text,
    initial_modes,
    model_params,
    parse_bound_value,
    parse_example,
    parse_shape,
    positional_parameter,
)
from freeze_widgets.ui.graph_view import GraphView
from freeze_widgets.ui.lifecycle import close_widget_tree
from freeze_widgets.ui.messages import MessageArea
from freeze_widgets.ui.panel_common import (
    busy_line,
    meta_tooltip,
)

__all__ = [
    "ExportPanel",
    "default_input_shape",
    "parse_bound_value",
    "parse_example",
    "parse_shape",
    "report_html",
]

EXPORTERS = {
    "ONNX (dynamo)": "dynamo",
    "ONNX (TorchScript exporter)": "torchscript",
    "TorchScript + jit.freeze (.pt)": "jit",
}
_RUN_TOOLTIP = "Export, then check the file and compare it with PyTorch"


def _user_namespace() -> dict[str, Any] | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else dict(shell.user_ns)


class ExportPanel(BackgroundWork, widgets.VBox):
    """The export controls and the last report; the Netron button shows the last export.

    A model whose forward has named arguments gets one row per argument; one with only
    ``*args`` (or wrapped so) gets one row per example tensor, with a button to add more.

    Args:
        get_model: Returns the model to export (called when Export is clicked).
        out_path: Default output path (``$FREEZE_WIDGETS_OUT/model.onnx`` or
            ``exports/model.onnx``).
    """

    # Over 60 lines on purpose: a widget's children are built in one place and read
    # whole, in the order they appear on screen.
    def __init__(
        self,
        get_model: Callable[[], nn.Module],
        *,
        out_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._get_model = get_model
        model = get_model()
        out_dir = os.environ.get("FREEZE_WIDGETS_OUT", "exports")
        self.path = widgets.Text(
            value=out_path or str(Path(out_dir) / "model.onnx"),
            description="output",
            layout=widgets.Layout(width="420px"),
        )
        self.path.add_class("fw-export-path")
        self.exporter = widgets.Dropdown(options=list(EXPORTERS), description="exporter")
        self.exporter.observe(self._on_exporter, names="value")
        self._shape = default_input_shape(model)
        self.positional = not model_params(model)
        self.args = self._make_rows(model)
        self.args_box = widgets.VBox(list(self.args))
        self.add_input = widgets.Button(
            description="add input",
            icon="plus",
            tooltip="forward() takes *args: one row per example tensor",
            layout=widgets.Layout(display="" if self.positional else "none"),
        )
        self.add_input.on_click(self._on_add_input)
        self.run_button = widgets.Button(description="Export", icon="download")
        self.run_button.add_class("fw-export-run")
        self.netron_button = widgets.Button(
            description="Netron", icon="project-diagram", disabled=True, tooltip="Export first"
        )
        self.netron_button.add_class("fw-netron")
        self.status = widgets.Label("")
        self.report_view = widgets.HTML()
        self.report_view.add_class("fw-export-report")
        self.netron_view = widgets.Box(layout=widgets.Layout(display="block", width="100%"))
        self.netron_view.add_class("fw-netron-view")
        self.messages = MessageArea()
        self.last_report: ExportReport | None = None
        self.last_error: BaseException | None = None
        self._netron: GraphView | None = None
        self._closed = False
        heading = widgets.HTML(
            "<b>forward() arguments</b>: inputs become graph inputs, bound ones constants"
        )
        super().__init__(
            [
                heading,
                self.args_box,
                self.add_input,
                widgets.HBox([self.path, self.exporter]),
                widgets.HBox([self.run_button, self.netron_button, self.status]),
                self.messages,
                self.report_view,
                self.netron_view,
            ],
            **kwargs,
        )
        self.add_class("fw-export")
        self.run_button.on_click(self._on_run)
        self.netron_button.on_click(self._on_netron)
        self.refresh_state(model)

    def _make_rows(self, model: nn.Module) -> list[ArgRow]:
        if self.positional:
            shape = ", ".join(map(str, self._shape))
            return [ArgRow(positional_parameter(0), "input", shape)]
        params = model_params(model)
        modes = initial_modes(params)
        return [ArgRow(p, modes[p.name], example_text(p.name, model, self._shape)) for p in params]

    # ------------------------------------------------------------------ public

    def refresh_state(self, model: nn.Module | None = None) -> None:
        """Enable Export, or disable it with the reason (a structure-only model has no weights)."""
        model = self._get_model() if model is None else model
        if on_meta_device(model):
            self.run_button.disabled = True
            self.run_button.tooltip = meta_tooltip("export")
        else:
            self.run_button.disabled = self.running
            self.run_button.tooltip = _RUN_TOOLTIP

    def arguments(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(example inputs by name, bound values by name) from the rows, validated."""
        namespace = _user_namespace()
        inputs: dict[str, torch.Tensor] = {}
        bound: dict[str, Any] = {}
        for row in self.args:
            name = row.param.name
            if row.mode.value == "input":
                inputs[name] = parse_example(name, row.value.value, namespace)
            else:
                bound[name] = parse_bound_value(name, row.value.value, namespace)
        if not inputs:
            raise ValueError("every argument is bound: mark at least one as an input")
        return inputs, bound

    def export_target(
        self, model: nn.Module, inputs: dict[str, Any], bound: dict[str, Any]
    ) -> nn.Module:
        """What is exported: the unwrapped model, with bound arguments fixed.

        DataParallel / DDP / ``torch.compile`` wrappers are unwrapped (same parameters). A
        ``*args`` forward gets positional-only stand-ins ``input_0``, ``input_1``, ...
        Arguments after the last input or non-default bound value are left out of the call, so
        they keep their defaults: transformers' decorators inject ``use_cache`` by keyword and
        a positional value for it would collide (docs/design.md, trap 16).
        """
        inner, notes = unwrap_model(model)
        if self.positional:
            params = [positional_parameter(i) for i in range(len(self.args))]
            return BoundModule(inner, inspect.Signature(params), bound)
        checked = bind(inner, **bound)  # validates names and constants
        checked.unwrapped = notes
        params = model_params(inner)
        used = [
            i
            for i, p in enumerate(params)
            if p.name in inputs or (p.name in bound and not _is_default(p, bound[p.name]))
        ]
        keep = params[: max(used) + 1] if used else params
        if len(keep) == len(params):
            return checked
        kept = {p.name for p in keep}
        prefix_bound = {name: value for name, value in bound.items() if name in kept}
        target = BoundModule(inner, inspect.Signature(keep), prefix_bound)
        target.unwrapped = notes
        return target

    def run(self, block: bool = False) -> None:
        """Export in a background thread (the notebook stays responsive)."""
        if self.running:
            self.messages.info("an export is already running; wait for it to end")
            return
        self.messages.clear()
        if on_meta_device(self._get_model()):
            self.refresh_state()
            self.messages.info(meta_tooltip("export"))
            return
        self.status.value = "exporting..."
        self.run_button.disabled = True
        if not self._start("fw-export", block):
            self.run_button.disabled = False
            self.status.value = ""
            self.messages.info(busy_line(self.busy))

    def show_netron(self) -> None:
        """Show the last export in the graph view (netron inside the widget, no server)."""
        if self.last_report is None:
            raise RuntimeError("nothing exported yet: click Export first")
        view = GraphView(self.last_report.path, height=560)
        old, self._netron = self._netron, view
        self.netron_view.children = (view,)
        if old is not None:
            close_widget_tree(old)

    def release_netron(self) -> None:
        """Close this panel's graph view."""
        if self._netron is not None:
            close_widget_tree(self._netron)  # its layout too
            self._netron = None
        self.netron_view.children = ()

    def shutdown(self) -> None:
        """Release the Netron view (kept for callers of the earlier API)."""
        self.release_netron()

    def close(self) -> None:
        """Release the Netron view and close every widget of the panel.

        An export already running cannot be interrupted: it finishes in its thread, and its
        result is dropped.
        """
        if self._closed:
            return
        self._closed = True
        self.release_netron()
        close_widget_tree(self)
        super().close()

    # ------------------------------------------------------------------ handlers

    def _on_exporter(self, change: dict[str, Any]) -> None:
        suffix = ".pt" if EXPORTERS[change["new"]] == "jit" else ".onnx"
        self.path.value = str(Path(self.path.value).with_suffix(suffix))

    def _on_add_input(self, _button: Any) -> None:
        shape = ", ".join(map(str, self._shape))
        self.args.append(ArgRow(positional_parameter(len(self.args)), "input", shape))
        self.args_box.children = tuple(self.args)

    def _on_run(self, _button: Any) -> None:
        self.run(block=False)

    def _on_netron(self, _button: Any) -> None:
        try:
            self.show_netron()
        except Exception as exc:
            self.messages.error(exc, "Netron")

    def _work(self) -> None:
        try:
            inputs, bound = self.arguments()
            target = self.export_target(self._get_model(), inputs, bound)
            path = Path(self.path.value).expanduser()
            kind = EXPORTERS[self.exporter.value]
            if kind == "jit":
                report = export_torchscript(target, inputs, path, method="trace")
            else:
                report = export_onnx(target, inputs, path, exporter=kind)  # type: ignore[arg-type]
            if self._closed:
                return
            self.last_report = report
            self.report_view.value = report_html(report)
            self.netron_button.disabled = False
            self.netron_button.tooltip = f"Show {path.name} in Netron"
            self.status.value = "export verified" if report.ok else "export FAILED verification"
        except Exception as exc:  # one readable line, never a traceback in the widget
            self.last_error = exc
            self.messages.error(exc, "export")
            self.status.value = "export failed"
        finally:
            self.run_button.disabled = False


def _is_default(param: inspect.Parameter, value: Any) -> bool:
    """True when ``value`` is the parameter's own default (so binding it changes nothing)."""
    if param.default is inspect.Parameter.empty:
        return False
    if value is param.default:
        return True
    try:
        return type(value) is type(param.default) and bool(value == param.default)
    except Exception:  # tensors and other values without a plain truth value
        return False


_RATIO = re.compile(r"\(([^()]*)x\)")


def _explain(label: str, value: str, runtime: str) -> str:
    """Name the latency ratio: "(0.63x)" alone does not say which time is divided by which."""
    if not label.startswith("latency"):
        return value
    return _RATIO.sub(lambda m: f"(ratio {runtime} time / PyTorch time: {m.group(1)}x)", value)


def report_html(report: ExportReport) -> str:
    """The report as a table, with a ``data-parity`` marker for scripts and browser tests."""
    parity = "ok" if report.ok else "fail"
    worst = max((p.max_rel for p in report.parity), default=float("nan"))
    worst_abs = max((p.max_abs for p in report.parity), default=float("nan"))
    colour = "var(--jp-success-color1,#2e7d32)" if report.ok else "var(--jp-error-color1,#c62828)"
    runtime = "onnxruntime" if report.exporter.startswith("onnx") else "TorchScript"
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(label)}</th>"
        f"<td style='text-align:left'>{html.escape(_explain(label, value, runtime))}</td></tr>"
        for label, value in report.to_rows()
    )
    return (
        f'<div><span data-parity="{parity}" style="color:{colour};font-weight:600">'
        f"{'parity OK' if report.ok else 'parity FAILED'}: max relative difference {worst:.2e} "
        f"of the output's scale (tolerance {report.tolerance:g}), max abs {worst_abs:.2e}</span>"
        + (f"<div>{html.escape(report.error)}</div>" if report.error else "")
        + f'<table style="font-variant-numeric:tabular-nums">{body}</table></div>'
    )
