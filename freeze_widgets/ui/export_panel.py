"""Export panel: mark forward() arguments as inputs or bound constants, export, verify, Netron."""

from __future__ import annotations

import ast
import html
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import torch
from torch import nn

from .._helpers import named_parameters_of
from ..export import ExportReport, bind, export_onnx, export_torchscript
from ..netron import start_netron, stop_netron
from .background import BackgroundWork
from .messages import MessageArea
from .netron_view import colab_output, show_netron

__all__ = ["ExportPanel", "default_input_shape", "parse_bound_value", "parse_shape"]

EXPORTERS = {
    "ONNX (dynamo)": "dynamo",
    "ONNX (TorchScript exporter)": "torchscript",
    "TorchScript + jit.freeze (.pt)": "jit",
}


def default_input_shape(model: nn.Module) -> tuple[int, ...]:
    """A plausible example shape from the first layer (batch 2: size-1 dims get specialised)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return (2, module.in_channels, 224, 224)
        if isinstance(module, nn.Conv1d):
            return (2, module.in_channels, 128)
        if isinstance(module, nn.Conv3d):
            return (2, module.in_channels, 8, 64, 64)
        if isinstance(module, nn.Linear):
            return (2, module.in_features)
    return (2, 16)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"2, 3, 224, 224"`` -> ``(2, 3, 224, 224)``."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"shape {text!r} is not a list of integers such as '2, 3, 224, 224'"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(
            f"shape {text!r} needs one or more positive sizes, such as '2, 3, 224, 224'"
        )
    return shape


def parse_bound_value(name: str, text: str, namespace: dict[str, Any] | None = None) -> Any:
    """A bound argument's value: a notebook variable by name, or a Python literal.

    Raises:
        ValueError: neither a variable in ``namespace`` nor a literal; the message says both.
    """
    text = text.strip()
    if namespace is not None and text.isidentifier() and text in namespace:
        return namespace[text]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(
            f"{name}: {text!r} is neither a literal (True, 0.5, None, 'text') nor a variable "
            "defined in the notebook"
        ) from None


def _user_namespace() -> dict[str, Any] | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else dict(shell.user_ns)


class _ArgRow(widgets.HBox):
    """One forward() argument: input (with an example shape) or bound (to a value)."""

    def __init__(self, param: inspect.Parameter, shape: tuple[int, ...] | None) -> None:
        self.param = param
        required = param.default is inspect.Parameter.empty
        self.mode = widgets.ToggleButtons(
            options=["input", "bound"],
            value="input" if required else "bound",
            style={"button_width": "60px"},
        )
        default = "" if required else repr(param.default)
        self.shape_text = ", ".join(str(d) for d in shape) if shape else "2, 16"
        self.value = widgets.Text(
            value=self.shape_text if required else default,
            layout=widgets.Layout(width="260px"),
        )
        self.hint = widgets.HTML()
        self.mode.observe(self._on_mode, names="value")
        label = widgets.HTML(f"<code>{html.escape(param.name)}</code>", layout={"width": "140px"})
        super().__init__([label, self.mode, self.value, self.hint])
        self.add_class("fw-arg-row")
        self._on_mode({"new": self.mode.value})

    def _on_mode(self, change: dict[str, Any]) -> None:
        if change["new"] == "input":
            self.hint.value = "<small>example shape (batch first)</small>"
            if not self.value.value or not self.value.value[0].isdigit():
                self.value.value = self.shape_text
        else:
            self.hint.value = "<small>literal or notebook variable</small>"


class ExportPanel(BackgroundWork, widgets.VBox):
    """The export controls and the last report; the Netron button shows the last export.

    Args:
        get_model: Returns the model to export (called when Export is clicked).
        out_path: Default output path (``$FREEZE_WIDGETS_OUT/model.onnx`` or
            ``exports/model.onnx``).
    """

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
        shape = default_input_shape(model)
        self.args = [_ArgRow(p, shape) for p in named_parameters_of(model.forward)]
        self.run_button = widgets.Button(description="Export", icon="download")
        self.run_button.add_class("fw-export-run")
        self.netron_button = widgets.Button(
            description="Netron", icon="project-diagram", disabled=True, tooltip="Export first"
        )
        self.netron_button.add_class("fw-netron")
        self.status = widgets.Label("")
        self.report_view = widgets.HTML()
        self.report_view.add_class("fw-export-report")
        self.netron_view = widgets.HTML()
        self.netron_view.add_class("fw-netron-view")
        self.messages = MessageArea()
        self.last_report: ExportReport | None = None
        self.last_error: BaseException | None = None
        self._netron_paths: set[str] = set()
        heading = widgets.HTML(
            "<b>forward() arguments</b>: inputs become graph inputs, bound ones constants"
        )
        super().__init__(
            [
                heading,
                *self.args,
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

    # ------------------------------------------------------------------ public

    def arguments(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(example inputs by name, bound values by name) from the rows, validated."""
        namespace = _user_namespace()
        inputs: dict[str, torch.Tensor] = {}
        bound: dict[str, Any] = {}
        for row in self.args:
            name = row.param.name
            if row.mode.value == "input":
                inputs[name] = torch.randn(*parse_shape(row.value.value))
            else:
                bound[name] = parse_bound_value(name, row.value.value, namespace)
        if not inputs:
            raise ValueError("every argument is bound: mark at least one as an input")
        return inputs, bound

    def run(self, block: bool = False) -> None:
        """Export in a background thread (the notebook stays responsive)."""
        if self.running:
            return
        self.messages.clear()
        self.status.value = "exporting..."
        self.run_button.disabled = True
        self._start("fw-export", block)

    def show_netron(self) -> None:
        """Show the last export in Netron (server on 127.0.0.1) inside the panel."""
        if self.last_report is None:
            raise RuntimeError("nothing exported yet: click Export first")
        path = str(self.last_report.path)
        server = start_netron(path)
        self._netron_paths.add(path)
        if colab_output() is not None:
            # Colab serves the kernel's port itself, as a frame in the cell output.
            show_netron(path)
            return
        url = server.url
        self.netron_view.value = (
            f'<iframe src="{html.escape(url)}" title="Netron: {html.escape(Path(path).name)}" '
            'style="width:100%;height:560px;border:1px solid var(--jp-border-color2,#ccc)">'
            "</iframe>"
        )

    def shutdown(self) -> None:
        """Stop the Netron servers this panel started."""
        for path in self._netron_paths:
            stop_netron(path)
        self._netron_paths.clear()

    # ------------------------------------------------------------------ handlers

    def _on_exporter(self, change: dict[str, Any]) -> None:
        suffix = ".pt" if EXPORTERS[change["new"]] == "jit" else ".onnx"
        self.path.value = str(Path(self.path.value).with_suffix(suffix))

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
            model = self._get_model()
            target = bind(model, **bound) if bound else model
            path = Path(self.path.value).expanduser()
            kind = EXPORTERS[self.exporter.value]
            if kind == "jit":
                report = export_torchscript(target, inputs, path, method="trace")
            else:
                report = export_onnx(target, inputs, path, exporter=kind)  # type: ignore[arg-type]
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


def report_html(report: ExportReport) -> str:
    """The report as a table, with a ``data-parity`` marker for scripts and browser tests."""
    parity = "ok" if report.ok else "fail"
    worst = max((p.max_abs for p in report.parity), default=float("nan"))
    colour = "var(--jp-success-color1,#2e7d32)" if report.ok else "var(--jp-error-color1,#c62828)"
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(label)}</th>"
        f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
        for label, value in report.to_rows()
    )
    return (
        f'<div><span data-parity="{parity}" style="color:{colour};font-weight:600">'
        f"{'parity OK' if report.ok else 'parity FAILED'}: max abs difference {worst:.2e} "
        f"(tolerance {report.atol:g})</span>"
        f'<table style="font-variant-numeric:tabular-nums">{body}</table></div>'
    )
