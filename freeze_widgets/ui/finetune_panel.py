"""Fine-tune panel: run :func:`freeze_widgets.training.finetune` in a background thread.

Thin on purpose: the panel reads its controls, calls the core, and renders the
:class:`~freeze_widgets.training.FineTuneReport` it gets back. Everything it does can be done from
a script with ``finetune(model, ...)``.
"""

from __future__ import annotations

import html
import inspect
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from torch import nn

from freeze_widgets.base.checks import on_meta_device
from freeze_widgets.checks.findings import Finding
from freeze_widgets.checks.preflight import check_distributed
from freeze_widgets.data.synthetic import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SYNTHETIC_CLASSES,
    DEFAULT_SYNTHETIC_N,
)
from freeze_widgets.run import finetune
from freeze_widgets.training import FineTuneReport, StepEvent, VerificationRow
from freeze_widgets.ui.background import BackgroundWork
from freeze_widgets.ui.lifecycle import close_widget_tree
from freeze_widgets.ui.lr_schedule import ScheduleControl
from freeze_widgets.ui.messages import MessageArea
from freeze_widgets.ui.panel_common import (
    busy_line,
    meta_tooltip,
)
from freeze_widgets.ui.plot_svg import plot_svg

__all__ = ["FineTunePanel", "data_description", "figures_html", "verification_html"]

#: The live plot is redrawn at most this often (seconds): each redraw is a comm message.
PLOT_INTERVAL = 0.5
_RUN_TOOLTIP = "Train the trainable part, then check bitwise that the frozen part did not move"

_GREEN = "var(--jp-success-color1,#2e7d32)"
_RED = "var(--jp-error-color1,#c62828)"
_AMBER = "var(--jp-warn-color1,#ef6c00)"


# --------------------------------------------------------------------------- pure renderers


def _row_html(row: VerificationRow, colour: str) -> str:
    change = f"{row.max_abs_change:.3g}" if row.changed else "0"
    note = f" ({html.escape(row.note)})" if row.note else ""
    return (
        f'<tr style="color:{colour}"><td><code>{html.escape(row.name)}</code></td>'
        f"<td>{row.kind}</td><td>{'frozen' if row.was_frozen else 'trainable'}</td>"
        f"<td>{change}</td><td>{html.escape(row.status)}{note}</td></tr>"
    )


def _table(rows: list[str]) -> str:
    head = "<tr><th>tensor</th><th>kind</th><th>was</th><th>max |change|</th><th>status</th></tr>"
    return (
        '<table style="border-collapse:collapse;font-size:0.85em">'
        + head
        + "".join(rows)
        + "</table>"
    )


def verification_html(report: FineTuneReport) -> str:
    """Summary lines, then the offending rows in red, or all frozen rows green behind a toggle."""
    verdict_colour = _GREEN if report.ok else _RED
    lines = "<br>".join(html.escape(line) for line in report.verification_lines())
    parts = [
        f'<div class="fw-verify"><div style="color:{verdict_colour};font-weight:600">'
        f"{'&#10004;' if report.ok else '&#10008;'} {lines}</div>"
    ]
    moved = report.moved
    silent = report.no_gradient_path
    if moved or silent:
        rows = [_row_html(r, _RED) for r in moved] + [_row_html(r, _AMBER) for r in silent]
        parts.append(_table(rows))
    frozen = [r for r in report.verification if r.was_frozen and r.status != "MOVED"]
    if frozen:
        unchanged = sum(1 for r in frozen if not r.changed)
        parts.append(
            f"<details><summary>{len(frozen)} frozen tensors checked, {unchanged} bitwise "
            f"unchanged</summary>"
            + _table([_row_html(r, _GREEN if not r.changed else _AMBER) for r in frozen])
            + "</details>"
        )
    parts.append("</div>")
    return "".join(parts)


def figures_html(report: FineTuneReport) -> str:
    """The run's figures as a small two-column table."""
    epochs = f"{report.epochs} epoch{'' if report.epochs == 1 else 's'}"
    items: list[tuple[str, str]] = [
        ("steps", f"{report.steps} of {report.total_steps} ({epochs})"),
        ("samples/s", f"{report.samples_per_second:.1f}"),
        ("time", f"{report.total_seconds:.1f} s"),
    ]
    # The plot shows each step's batch; the epoch figures average a whole epoch: say which.
    if report.final_loss is not None:
        items.append(("loss, last step", f"{report.final_loss:.4g}"))
    if report.step_acc:
        items.append(("accuracy, last step's batch", f"{report.step_acc[-1]:.1%}"))
    if report.final_acc is not None:
        last = len(report.epoch_acc)
        items.append((f"accuracy, mean over epoch {last}", f"{report.final_acc:.1%}"))
    items.append(("head", report.head_replaced or "kept"))
    items.append(("BatchNorm policy", report.bn_policy))
    if report.frozen_prefix:
        items.append(("no_grad prefix", ", ".join(report.frozen_prefix)))
    if report.cached_epochs:
        items.append(("cached-feature epochs", ", ".join(map(str, report.cached_epochs))))
    for event in report.unfreeze_events:
        items.append((f"epoch {event.epoch}", f"unfroze {event.group} (lr {event.lr:.3g})"))
    if report.stopped_early:
        items.append(("stopped", report.stop_reason or "early"))
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in items)
    return f'<table class="fw-finetune-figures" style="font-size:0.85em">{rows}</table>'


def findings_html(findings: list[Finding]) -> str:
    """The preflight's findings before a multi-process run (what DDP would trip over)."""
    if not findings:
        return "<small>Preflight for DDP: no findings.</small>"
    items = "".join(
        f"<li><b>{html.escape(f.kind)}</b>"
        + (f" <code>{html.escape(f.path)}</code>" if f.path else "")
        + f": {html.escape(f.message)} <i>Fix:</i> {html.escape(f.fix)}</li>"
        for f in findings
    )
    return f"<small>Preflight for DDP ({len(findings)} findings):</small><ul>{items}</ul>"


def _finetune_takes(name: str) -> bool:
    """Whether this version of :func:`finetune` has the keyword ``name`` (``nproc`` is new)."""
    return name in inspect.signature(finetune).parameters


def data_description(data: Any, num_classes: int, image_size: int) -> str:
    """What a run trains on, in one line (synthetic shapes unless a dataset was given)."""
    if data is None or data == "synthetic":
        return (
            f"Data: synthetic shapes ({DEFAULT_SYNTHETIC_N} generated {image_size}x{image_size} "
            f"images of stripes, discs, squares, rings..., {num_classes} classes), not your "
            "data. To train on your own, pass data= (a Dataset, a DataLoader, an ImageFolder "
            "path, or 'digits') to FineTunePanel or finetune()."
        )
    if data == "digits":
        return (
            "Data: scikit-learn's 8x8 handwritten digits (offline, training split, 10 classes), "
            f"upscaled to {image_size}x{image_size}"
        )
    if isinstance(data, str | os.PathLike):
        return f"Data: the image folder {os.fspath(data)} (resized to {image_size}px)"
    size = f", {len(data)} items" if hasattr(data, "__len__") else ""
    return f"Data: the {type(data).__name__} you passed{size}"


# --------------------------------------------------------------------------- the panel


class FineTunePanel(BackgroundWork, widgets.VBox):
    """Controls, live progress and the verification of a demo fine-tune.

    Args:
        get_model: Returns the model to train (called when Run is clicked).
        on_finished: Called with the report after a run that touched the model (for example so
            an explorer can refresh its tree after the head was replaced).
        get_bn_policy: Returns the BatchNorm policy to re-apply to frozen BatchNorm layers.
        get_lr_groups: Returns ``finetune``'s ``lr_groups`` (the explorer's "lr ×"), or None.
        data: Passed to :func:`finetune`; None means synthetic images (the panel says which
            data it trains on).
        image_size: Side of the synthetic images.
    """

    def __init__(
        self,
        get_model: Callable[[], nn.Module],
        *,
        on_finished: Callable[[FineTuneReport], None] | None = None,
        get_bn_policy: Callable[[], str] | None = None,
        get_lr_groups: Callable[[], dict[str, Any] | None] | None = None,
        data: Any = None,
        image_size: int = DEFAULT_IMAGE_SIZE,
        **kwargs: Any,
    ) -> None:
        self._get_model = get_model
        self._on_finished = on_finished
        self._get_bn_policy = get_bn_policy
        self._get_lr_groups = get_lr_groups
        self._data = data
        self._image_size = image_size
        self._make_controls(data)
        self.data_note = widgets.HTML(
            f"<small>{html.escape(data_description(data, int(self.num_classes.value), image_size))}"
            "</small>"
        )
        self.data_note.add_class("fw-finetune-data")
        self.run_button = widgets.Button(
            description="Run fine-tune", icon="play", tooltip=_RUN_TOOLTIP
        )
        self.run_button.add_class("fw-finetune-run")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.stop_button.add_class("fw-finetune-stop")
        self.progress = widgets.IntProgress(0, min=0, max=1, layout=widgets.Layout(width="50%"))
        self.progress.add_class("fw-finetune-progress")
        self.eta = widgets.Label("")
        self.plot = widgets.HTML("", layout=widgets.Layout(display="none"))
        self.plot.add_class("fw-finetune-plot")
        self.results = widgets.HTML("")
        self.results.add_class("fw-verify")
        self.messages = MessageArea()
        self.messages.add_class("fw-finetune-error")
        self.preflight = widgets.HTML("")
        self.preflight.add_class("fw-finetune-preflight")
        self.last_report: FineTuneReport | None = None
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._losses: list[float] = []
        self._accs: list[float] = []
        self._last_plot = 0.0
        self._closed = False
        super().__init__(
            [
                self.data_note,
                widgets.HBox([self.epochs, self.steps, self.lr]),
                widgets.HBox([self.batch_size, self.num_classes, self.processes]),
                self.schedule,
                widgets.HBox([self.run_button, self.stop_button]),
                widgets.HBox([self.progress, self.eta]),
                self.plot,
                self.messages,
                self.preflight,
                self.results,
            ],
            **kwargs,
        )
        self.add_class("fw-finetune")
        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self.refresh_state()

    def _make_controls(self, data: Any) -> None:
        """The run's settings; "processes" shows only where finetune() takes ``nproc``."""
        style = {"description_width": "initial"}
        self.epochs = widgets.BoundedIntText(1, min=1, max=1000, description="epochs", style=style)
        self.steps = widgets.BoundedIntText(
            0, min=0, max=1_000_000, description="steps (0 = all)", style=style
        )
        self.lr = widgets.BoundedFloatText(1e-3, min=1e-8, max=10.0, description="lr", style=style)
        self.batch_size = widgets.BoundedIntText(
            32, min=1, max=4096, description="batch", style=style
        )
        self.num_classes = widgets.BoundedIntText(
            DEFAULT_SYNTHETIC_CLASSES if data is None else 0,
            min=0,
            max=100_000,
            description="classes (0 = from data)",
            style=style,
        )
        self.processes = widgets.BoundedIntText(
            1,
            min=1,
            max=64,
            description="processes",
            style=style,
            tooltip="More than 1 runs the same verified run in local worker processes (DDP)",
        )
        self.processes.add_class("fw-finetune-nproc")
        if not _finetune_takes("nproc"):
            self.processes.layout.display = "none"
        for control in (self.epochs, self.lr, self.batch_size, self.processes):
            control.layout.width = "150px"
        self.schedule = ScheduleControl()  # its planned rates show before the run
        for control in (self.epochs, self.lr, self.schedule.choice):
            control.observe(self._show_plan, names="value")

    def _show_plan(self, _change: Any = None) -> None:
        self.schedule.show_plan(self._get_model(), float(self.lr.value), int(self.epochs.value))

    # ------------------------------------------------------------------ public

    def refresh_state(self) -> None:
        """Enable Run, or disable it with the reason (a structure-only model has no weights)."""
        if on_meta_device(self._get_model()):
            self.run_button.disabled = True
            self.run_button.tooltip = meta_tooltip("fine-tune")
        else:
            self.run_button.disabled = self.running
            self.run_button.tooltip = _RUN_TOOLTIP

    def run(self, block: bool = False) -> None:
        """Start a run in a background thread (a second click while running is ignored)."""
        if self.running:
            self.messages.info("a fine-tune is already running; Stop it first")
            return
        self.messages.clear()
        if on_meta_device(self._get_model()):
            self.refresh_state()
            self.messages.info(meta_tooltip("fine-tune"))
            return
        self.results.value = ""
        self.plot.value = ""  # the previous run's curves must not pass for this run's
        self.plot.layout.display = "none"
        self.last_error = None
        self._stop.clear()
        self._losses, self._accs = [], []
        self._last_plot = 0.0
        self.progress.value = 0
        self.progress.bar_style = ""
        self.eta.value = "starting..."
        self.run_button.disabled = True
        self.stop_button.disabled = False
        if not self._start("fw-finetune", block):
            self.run_button.disabled = False
            self.stop_button.disabled = True
            self.eta.value = ""
            self.messages.info(busy_line(self.busy))

    def stop(self) -> None:
        """Ask the run to stop after its current step."""
        self._stop.set()
        self.eta.value = "stopping after this step..."

    def close(self, timeout: float = 30.0) -> None:
        """Stop a running fine-tune (after its current step), then close every widget.

        Args:
            timeout: Seconds to wait for the run to stop; a run still going after that ends
                in its thread with its result dropped.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.wait(timeout)
        close_widget_tree(self)
        super().close()

    # ------------------------------------------------------------------ handlers

    def _on_run(self, _button: widgets.Button) -> None:
        self.run(block=False)

    def _on_stop(self, _button: widgets.Button) -> None:
        self.stop()

    def _options(self) -> dict[str, Any]:
        bn = self._get_bn_policy() if self._get_bn_policy is not None else None
        options: dict[str, Any] = {
            "epochs": int(self.epochs.value),
            "steps": int(self.steps.value) or None,
            "lr": float(self.lr.value),
            "batch_size": int(self.batch_size.value),
            "num_classes": int(self.num_classes.value) or None,
            "bn": bn,
            "image_size": self._image_size,
        }
        if self.schedule.value is not None:
            options["unfreeze_schedule"] = self.schedule.value
        lr_groups = self._get_lr_groups() if self._get_lr_groups is not None else None
        if lr_groups is not None:  # the explorer's "lr ×" multipliers
            options["lr_groups"] = lr_groups
        nproc = int(self.processes.value)
        if nproc != 1 and _finetune_takes("nproc"):
            options["nproc"] = nproc
        return options

    def _work(self) -> None:
        report: FineTuneReport | None = None
        try:
            model = self._get_model()
            options = self._options()
            if "nproc" in options:
                self.preflight.value = findings_html(check_distributed(model, "ddp"))
                # Worker processes report no steps back; Stop (or closing) kills them at once.
                self.eta.value = f"running in {options['nproc']} processes (no live progress)..."
                report = finetune(model, self._data, stop=self._stop, **options)
            else:
                report = finetune(
                    model, self._data, callback=self._on_step, stop=self._stop, **options
                )
            self.progress.bar_style = "success" if report.ok else "danger"
            self.eta.value = (
                f"stopped after {report.steps} steps"
                if report.stopped_early
                else f"done in {report.total_seconds:.1f} s"
            )
        except Exception as exc:  # shown as one line; the panel must never raise into the UI
            self.last_error = exc
            report = getattr(exc, "report", None)
            self.messages.error(exc, "fine-tune")
            self.progress.bar_style = "danger"
            self.eta.value = "failed"
        finally:
            self.run_button.disabled = False
            self.stop_button.disabled = True
        if report is not None and not self._closed:
            self.last_report = report
            self._draw(force=True)
            self.results.value = verification_html(report) + figures_html(report)
            if self._on_finished is not None:
                try:
                    self._on_finished(report)
                except Exception as exc:  # a broken hook must not hide the result
                    self.messages.error(exc, "after fine-tune")

    def _on_step(self, event: StepEvent) -> None:
        self._losses.append(event.loss)
        self._accs.append(event.acc)
        self.progress.max = max(event.total_steps, 1)
        self.progress.value = event.step
        self.eta.value = (
            f"step {event.step}/{event.total_steps}, epoch {event.epoch}, "
            f"loss {event.loss:.4g}, acc {event.acc:.0%}, ETA {event.eta_seconds:.0f} s"
        )
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._losses or (not force and now - self._last_plot < PLOT_INTERVAL):
            return
        self._last_plot = now
        self.plot.value = plot_svg(self._losses, self._accs)
        self.plot.layout.display = ""
