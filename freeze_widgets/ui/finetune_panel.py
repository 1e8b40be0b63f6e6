"""Fine-tune panel: run :func:`freeze_widgets.training.finetune` in a background thread.

Thin on purpose: the panel reads its controls, calls the core, and renders the
:class:`~freeze_widgets.training.FineTuneReport` it gets back. Everything it does can be done from
a script with ``finetune(model, ...)``.
"""

from __future__ import annotations

import copy
import html
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from torch import nn

from freeze_widgets.base.checks import on_meta_device
from freeze_widgets.checks.preflight import check_distributed
from freeze_widgets.data.synthetic import (
    DEFAULT_IMAGE_SIZE,
)
from freeze_widgets.distributed.launcher import abort
from freeze_widgets.run import finetune
from freeze_widgets.training import FineTuneReport, StepEvent
from freeze_widgets.ui.background import BackgroundWork
from freeze_widgets.ui.finetune_head import (
    HeadPlan,
    apply_trained,
    data_classes,
    plan_head,
    resolve_data,
)
from freeze_widgets.ui.finetune_render import (
    data_description,
    figures_html,
    findings_html,
    finish_line,
    verification_html,
)
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
COPY = "train a copy"
IN_PLACE = "replace the head in my model"
_RUN_TOOLTIP = "Train the trainable part, then check bitwise that the frozen part did not move"


def _finetune_takes(name: str) -> bool:
    """Whether this version of :func:`finetune` has the keyword ``name`` (``nproc`` is new)."""
    return name in inspect.signature(finetune).parameters


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

    # Over 60 lines on purpose: a widget's children are built in one place and read
    # whole, in the order they appear on screen.
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
        self.data_note = widgets.HTML()
        self.data_note.add_class("fw-finetune-data")
        self._make_head_controls()
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
                self.data_field,
                self.head_note,
                self.head_choice,
                widgets.HBox([self.epochs, self.steps, self.lr]),
                widgets.HBox([self.batch_size, self.num_classes, self.processes]),
                self.schedule,
                widgets.HBox([self.run_button, self.stop_button]),
                widgets.HBox([self.progress, self.eta]),
                self.plot,
                self.messages,
                self.preflight,
                self.results,
                self.apply_button,
            ],
            **kwargs,
        )
        self.add_class("fw-finetune")
        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self.apply_button.on_click(self._on_apply)
        self.num_classes.observe(self._on_plan_input, names="value")
        self.data_field.observe(self._on_plan_input, names="value")
        self.refresh_state()

    def _make_head_controls(self) -> None:
        """The data field, what the run does with the head, and the copy / in-place choice."""
        self.data_field = widgets.Text(
            value="synthetic",
            description="data",
            placeholder="synthetic, digits, or an ImageFolder path",
            tooltip="synthetic, digits (offline), or a folder with one sub-folder per class",
            layout=widgets.Layout(width="420px", display="none" if self._data is not None else ""),
        )
        self.data_field.add_class("fw-finetune-data-field")
        self.head_note = widgets.HTML()
        self.head_note.add_class("fw-finetune-head")
        self.head_choice = widgets.ToggleButtons(
            options=[COPY, IN_PLACE], value=COPY, style={"button_width": "auto"}
        )
        self.head_choice.add_class("fw-finetune-head-choice")
        self.apply_button = widgets.Button(
            description="Apply to my model",
            icon="check",
            tooltip="Put the trained copy's new head and weights into your model",
            layout=widgets.Layout(width="auto", display="none"),
        )
        self.apply_button.add_class("fw-finetune-apply")
        self.trained_copy: nn.Module | None = None
        self._show_plan()
        self._show_rate_plan()

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
            0,
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
            control.observe(self._show_rate_plan, names="value")

    def _show_rate_plan(self, _change: Any = None) -> None:
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
        self.trained_copy = None
        self.apply_button.layout.display = "none"
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

    def head_plan(self) -> HeadPlan:
        """What the next run does with the head (kept when the data's classes fit it)."""
        data = resolve_data(self._data, self.data_field.value)
        return plan_head(self._get_model(), data, int(self.num_classes.value))

    def apply_copy(self) -> None:
        """Put the trained copy's new head and weights into the user's model, then notify."""
        trained = self.trained_copy
        if trained is None:
            raise RuntimeError("no trained copy: run with 'train a copy' first")
        if self.busy is not None and self.busy.reason is not None:
            raise RuntimeError(f"{self.busy.reason}; apply when it ends")
        apply_trained(self._get_model(), trained)
        self.trained_copy = None
        self.apply_button.layout.display = "none"
        self.messages.info("applied: your model now has the trained copy's head and weights")
        self._show_plan()
        if self._on_finished is not None and self.last_report is not None:
            self._on_finished(self.last_report)

    def stop(self) -> None:
        """Ask the run to stop after its current step."""
        self._stop.set()
        self.eta.value = "stopping after this step..."

    def close(self, timeout: float = 30.0) -> None:
        """Stop a running fine-tune, then close every widget.

        One process stops after its current step; worker processes are killed at once (the
        model is left as it was), so closing never waits for a run.

        Args:
            timeout: Seconds to wait for the run to stop; a run still going after that ends
                in its thread with its result dropped.
        """
        if self._closed:
            return
        self._closed = True
        abort(self._stop)  # a run in worker processes is killed now, not at its next step
        self.wait(timeout)
        close_widget_tree(self)
        super().close()

    # ------------------------------------------------------------------ handlers

    def _on_run(self, _button: widgets.Button) -> None:
        self.run(block=False)

    def _on_stop(self, _button: widgets.Button) -> None:
        self.stop()

    def _on_apply(self, _button: widgets.Button) -> None:
        try:
            self.apply_copy()
        except Exception as exc:  # one line, never a traceback
            self.messages.error(exc, "apply")

    def _on_plan_input(self, _change: Any) -> None:
        self._show_plan()

    def _show_plan(self) -> None:
        """Say what the data is and what the run does with the head, before the run."""
        data = resolve_data(self._data, self.data_field.value)
        classes = int(self.num_classes.value) or data_classes(data) or 0
        line = data_description(data, classes, self._image_size)
        self.data_note.value = f"<small>{html.escape(line)}</small>"
        try:
            plan = self.head_plan()
        except Exception as exc:  # e.g. a model that cannot be read: the run will say why
            self.head_note.value = f"<small>{html.escape(str(exc))}</small>"
            return
        self.head_note.value = f"<small>{html.escape(plan.line)}</small>"
        self.head_choice.layout.display = "none" if plan.keep else ""

    def _options(self) -> dict[str, Any]:
        bn = self._get_bn_policy() if self._get_bn_policy is not None else None
        plan = self.head_plan()
        options: dict[str, Any] = {
            "epochs": int(self.epochs.value),
            "steps": int(self.steps.value) or None,
            "lr": float(self.lr.value),
            "batch_size": int(self.batch_size.value),
            "num_classes": plan.num_classes,
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
            data = resolve_data(self._data, self.data_field.value)
            if not self.head_plan().keep and self.head_choice.value == COPY:
                model = copy.deepcopy(model)  # a new head goes on a copy, not the user's model
                self.trained_copy = model
            if "nproc" in options:
                self.preflight.value = findings_html(check_distributed(model, "ddp"))
                self.eta.value = f"starting {options['nproc']} worker processes..."
            started = time.perf_counter()
            report = finetune(model, data, callback=self._on_step, stop=self._stop, **options)
            waited = time.perf_counter() - started
            self.progress.max = max(report.total_steps, 1)
            self.progress.value = report.steps if report.stopped_early else self.progress.max
            self.progress.bar_style = "success" if report.ok else "danger"
            self.eta.value = finish_line(report, waited, int(options.get("nproc", 1)))
            if not self._losses and report.step_loss:  # a curve even if no step was streamed
                self._losses, self._accs = list(report.step_loss), list(report.step_acc)
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
            if self.trained_copy is not None:
                self.apply_button.layout.display = ""
                self.messages.info(
                    "trained a copy with a new head; your model is unchanged (the copy is "
                    "panel.trained_copy; 'Apply to my model' puts it into your model)"
                )
            if self._on_finished is not None:
                try:
                    self._on_finished(report)
                except Exception as exc:  # a broken hook must not hide the result
                    self.messages.error(exc, "after fine-tune")
            self._show_plan()  # a head replaced in place: the next run keeps it

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
