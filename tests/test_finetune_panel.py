"""FineTunePanel driven by Button.click(), no kernel needed."""

from __future__ import annotations

from torch import nn

from freeze_widgets import synthetic_dataset
from freeze_widgets.freezing.targets import freeze, unfreeze
from freeze_widgets.training import FineTuneReport, VerificationRow
from freeze_widgets.ui.finetune_panel import FineTunePanel, verification_html

from .test_training import tiny_conv


def frozen_but_head() -> nn.Module:
    model = tiny_conv(num_classes=4)
    freeze(model)
    unfreeze(model, "fc")
    return model


def test_click_run_shows_verification_and_figures() -> None:
    model = frozen_but_head()
    finished: list[FineTuneReport] = []
    panel = FineTunePanel(lambda: model, on_finished=finished.append, image_size=16)
    assert "fw-finetune-run" in panel.run_button._dom_classes
    assert "fw-finetune-stop" in panel.stop_button._dom_classes
    panel.steps.value = 4
    panel.batch_size.value = 16
    panel.run_button.click()
    panel.wait(120)
    report = panel.last_report
    assert report is not None and report.ok and report.steps == 4
    assert finished == [report]
    assert panel.messages.last_error is None
    html = panel.results.value
    assert 'class="fw-verify"' in html
    assert "all 8 frozen parameter tensors bitwise unchanged; 2 trainable changed" in html
    assert "<details>" in html and "MOVED" not in html
    assert "samples/s" in html and "loss, last step" in html
    assert panel.progress.value == panel.progress.max == 4
    svg = panel.plot.value
    assert svg.startswith("<svg") and panel.plot.layout.display == ""
    # One point per step on each curve, loss values as recorded in the report.
    loss_points = svg.split('class="fw-plot-loss"')[1].split('points="')[1].split('"')[0]
    assert len(loss_points.split()) == len(report.step_loss) == 4
    assert not panel.run_button.disabled and panel.stop_button.disabled


def test_nothing_trainable_is_one_readable_line() -> None:
    model = tiny_conv(num_classes=4)
    freeze(model)
    panel = FineTunePanel(lambda: model, image_size=16)
    panel.run_button.click()
    panel.wait(60)
    error = panel.messages.last_error
    assert error is not None and "\n" not in error
    assert error.startswith("fine-tune: ValueError: nothing to train: all 10 parameters are frozen")
    assert "fw-finetune-error" in panel.messages._dom_classes
    visible = panel.messages.value.split("<details")[0]
    assert "Traceback" not in visible
    assert panel.last_report is None and not panel.run_button.disabled


def test_stop_button_and_bn_policy_hook() -> None:
    model = frozen_but_head()
    data = synthetic_dataset(n=256, num_classes=4, image_size=16)
    panel = FineTunePanel(lambda: model, get_bn_policy=lambda: "frozen", data=data)
    panel.batch_size.value = 8
    panel.epochs.value = 3
    panel.run_button.click()
    panel.stop_button.click()
    panel.wait(120)
    report = panel.last_report
    assert report is not None and report.stopped_early and report.steps < 96
    assert report.bn_policy == "frozen" and report.ok
    assert "stopped" in panel.results.value


def test_moved_rows_are_listed_in_red() -> None:
    report = FineTuneReport(
        steps=1,
        verification=[
            VerificationRow("conv1.weight", "parameter", True, True, 0.5, "MOVED"),
            VerificationRow("conv1.bias", "parameter", True, False, 0.0, "ok"),
            VerificationRow("fc.weight", "parameter", False, True, 0.1, "ok"),
        ],
    )
    assert not report.ok
    html = verification_html(report)
    assert "1 of 2 frozen parameter tensors MOVED: conv1.weight" in html
    table = html.split("<details>")[0]
    assert "<code>conv1.weight</code>" in table and "#c62828" in table
    assert "<code>conv1.bias</code>" not in table  # only offending rows up front
