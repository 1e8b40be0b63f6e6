"""Stop and progress for a run in 2 worker processes, driven from the fine-tune panel."""

from __future__ import annotations

import html
import os
import time

import pytest
import torch

from freeze_widgets.distributed.launcher import descendants
from freeze_widgets.ui.finetune_panel import FineTunePanel

from .distributed_helpers import Slow, tiny_net


@pytest.mark.slow
def test_stop_ends_every_rank_early_and_the_panel_shows_progress() -> None:
    model = tiny_net()
    model[0].requires_grad_(False)  # a frozen part for the verification to check
    frozen = model[0].weight.detach().clone()
    panel = FineTunePanel(lambda: model, data=Slow())
    panel.processes.value = 2
    panel.steps.value = 200
    panel.batch_size.value = 8
    panel.run()
    deadline = time.monotonic() + 240
    while panel.progress.value < 3 and panel.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert panel.progress.value >= 3, (panel.eta.value, panel.messages.value)
    assert panel.plot.layout.display == ""  # the loss curve while it runs
    asked_at = panel.progress.value
    panel.stop_button.click()
    panel.wait(120)
    assert not panel.running
    report = panel.last_report
    assert report is not None, html.unescape(panel.messages.value)
    assert report.ok and report.stopped_early
    # Every rank stopped within a few steps of the request (the launcher polls every 0.2 s).
    assert asked_at <= report.steps <= asked_at + 5 < report.total_steps == 200
    assert {r.steps for r in report.ranks} == {report.steps}
    assert torch.equal(model[0].weight, frozen)
    line = panel.eta.value
    assert line.startswith(f"stopped after {report.steps} of 200 steps in ")
    assert "starting and checking 2 worker processes" in line
    assert panel.progress.bar_style == "success" and panel.progress.value == report.steps
    assert "stopped" in html.unescape(panel.results.value)
    assert not descendants(os.getpid())  # no worker left behind
    panel.close()
