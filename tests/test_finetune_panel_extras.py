"""FineTunePanel: SVG plot, wording, data line, meta/busy guards, processes, close()."""

from __future__ import annotations

import inspect
import re
import threading
import time
from typing import Any

import ipywidgets.widgets.widget as widget_module
import pytest
import torch
from torch import nn

from freeze_widgets import synthetic_dataset
from freeze_widgets.freezing.targets import freeze, unfreeze
from freeze_widgets.training import FineTuneReport
from freeze_widgets.ui import finetune_panel as panel_module
from freeze_widgets.ui.background import BusyState
from freeze_widgets.ui.finetune_panel import FineTunePanel, figures_html
from freeze_widgets.ui.plot_svg import integer_ticks, plot_svg

from .test_training import tiny_conv


def frozen_but_head() -> nn.Module:
    model = tiny_conv(num_classes=4)
    freeze(model)
    unfreeze(model, "fc")
    return model


def test_integer_ticks_are_whole_steps() -> None:
    assert integer_ticks(4) == [1, 2, 3, 4]
    assert integer_ticks(10) == [1, 2, 4, 6, 8, 10]
    for last in (1, 3, 7, 15, 99, 1234):
        ticks = integer_ticks(last)
        assert ticks[0] == 1 and ticks[-1] <= last and len(ticks) <= 7
        assert all(isinstance(t, int) for t in ticks)


def test_svg_plot_follows_the_theme_and_has_no_fractional_step_ticks() -> None:
    losses = [2.0 - 0.1 * i for i in range(15)]
    svg = plot_svg(losses, [0.06 * i for i in range(15)])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "var(--jp-ui-font-color1" in svg and "background:transparent" in svg
    assert "<image" not in svg and "#fff" not in svg.lower()
    labels = re.findall(r'text-anchor="middle" style="[^"]+">([^<]+)</text>', svg)
    step_labels = [label for label in labels if label != "step"]
    assert step_labels and all(label.isdigit() for label in step_labels)
    assert plot_svg([], []) == ""


def test_wording_says_which_figure_is_which() -> None:
    report = FineTuneReport(
        step_loss=[1.0, 0.5],
        step_acc=[0.5, 0.9375],
        epoch_acc=[0.742],
        steps=2,
        total_steps=2,
        epochs=1,
    )
    text = figures_html(report)
    assert "(1 epoch)" in text and "1 epochs" not in text
    assert "accuracy, last step&#x27;s batch</td><td>93.8%" in text
    assert "accuracy, mean over epoch 1</td><td>74.2%" in text
    report.epochs = 3
    assert "(3 epochs)" in figures_html(report)


def test_data_line_says_what_it_trains_on() -> None:
    model = frozen_but_head()
    synthetic = FineTunePanel(lambda: model)
    assert "synthetic shapes" in synthetic.data_note.value
    assert "4 classes" in synthetic.data_note.value and "data=" in synthetic.data_note.value
    given = FineTunePanel(lambda: model, data=synthetic_dataset(n=64, num_classes=4))
    assert "SyntheticShapes you passed, 64 items" in given.data_note.value
    digits = FineTunePanel(lambda: model, data="digits")
    assert "handwritten digits" in digits.data_note.value
    for panel in (synthetic, given, digits):
        panel.close()


def test_new_run_clears_the_previous_plot() -> None:
    model = frozen_but_head()
    panel = FineTunePanel(lambda: model, image_size=16)
    panel.steps.value = 2
    panel.batch_size.value = 8
    panel.run(block=True)
    assert panel.plot.value.startswith("<svg")
    freeze(model)  # the next run fails before its first step
    panel.run(block=True)
    assert panel.messages.last_error is not None
    assert panel.plot.value == "" and panel.plot.layout.display == "none"
    panel.close()


def test_meta_model_disables_run_with_the_reason() -> None:
    with torch.device("meta"):
        model = frozen_but_head()
    panel = FineTunePanel(lambda: model)
    assert panel.run_button.disabled
    assert "meta device" in panel.run_button.tooltip and "load_model" in panel.run_button.tooltip
    panel.run(block=True)
    assert not panel.running and panel.last_report is None
    assert "meta device" in panel.messages.value and "Cannot copy" not in panel.messages.value
    panel.close()


def test_busy_model_is_one_readable_line() -> None:
    panel = FineTunePanel(frozen_but_head)
    panel.busy = BusyState()
    panel.busy.acquire("an export is reading the model")
    panel.run(block=True)
    assert "the model is busy: an export is reading the model" in panel.messages.value
    assert not panel.run_button.disabled and panel.stop_button.disabled
    assert panel.last_report is None
    panel.close()


def test_processes_are_passed_as_nproc(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake(model: nn.Module, data: Any = None, *, nproc: int = 1, **kwargs: Any) -> Any:
        calls.append({"nproc": nproc, **kwargs})
        return FineTuneReport(steps=1, total_steps=1, epochs=1)

    monkeypatch.setattr(panel_module, "finetune", fake)
    panel = FineTunePanel(frozen_but_head)
    assert panel.processes.value == 1 and panel.processes.layout.display != "none"
    panel.run(block=True)
    panel.processes.value = 2
    panel.run(block=True)
    assert [c["nproc"] for c in calls] == [1, 2]
    # Rank 0 streams its steps and every rank watches Stop: both go to a multi-process run too.
    assert all("callback" in c and "stop" in c for c in calls)
    panel.close()

    def old(model: nn.Module, data: Any = None, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return FineTuneReport(steps=1, total_steps=1, epochs=1)

    monkeypatch.setattr(panel_module, "finetune", old)
    assert "nproc" not in inspect.signature(old).parameters
    hidden = FineTunePanel(frozen_but_head)
    assert hidden.processes.layout.display == "none"
    hidden.processes.value = 3
    hidden.run(block=True)
    assert "nproc" not in calls[-1]
    hidden.close()


def test_close_stops_the_run_and_closes_every_widget() -> None:
    before = set(widget_module._instances)
    model = frozen_but_head()
    data = synthetic_dataset(n=256, num_classes=4, image_size=16)
    started = threading.Event()
    panel = FineTunePanel(lambda: model, data=data)
    panel.batch_size.value = 8
    panel.epochs.value = 50
    on_step = panel._on_step

    def noted(event: Any) -> None:
        started.set()
        on_step(event)

    panel._on_step = noted  # type: ignore[method-assign]
    panel.run()
    assert started.wait(60)
    begun = time.monotonic()
    panel.close()
    assert not panel.running and time.monotonic() - begun < 30
    assert set(widget_module._instances) <= before


def test_multi_process_run_shows_the_ddp_preflight_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The panel lists check_distributed's findings before a run in several processes."""
    from freeze_widgets import Finding

    seen: dict[str, object] = {}

    def fake_finetune(model: object, data: object, *, nproc: int = 1, **options: object) -> object:
        seen.update(options, nproc=nproc)
        raise RuntimeError("stop here: only the preflight is under test")

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(True)
    finding = Finding("unused_trainable", "1", "gets no gradient", "freeze it")
    monkeypatch.setattr(panel_module, "check_distributed", lambda m, s: [finding])
    monkeypatch.setattr(panel_module, "finetune", fake_finetune)
    panel = FineTunePanel(lambda: model)
    panel.processes.value = 2
    panel.run(block=True)
    assert seen["nproc"] == 2
    assert "unused_trainable" in panel.preflight.value and "freeze it" in panel.preflight.value
    panel.close()
