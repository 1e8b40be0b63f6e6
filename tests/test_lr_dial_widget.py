"""The "lr ×" control driven from Python: modes, a row edit, frozen rows at 0, bad input."""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeSpec, freeze, param_groups, unfreeze
from freeze_widgets.training.param_groups import param_lr_table
from freeze_widgets.ui.finetune_panel import FineTunePanel
from freeze_widgets.ui.lr_dial import LrDial

from .test_training import tiny_conv


def model3() -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(OrderedDict(a=nn.Linear(4, 4), b=nn.Linear(4, 4)))
    return nn.Sequential(OrderedDict(stem=nn.Linear(4, 4), body=body, head=nn.Linear(4, 2)))


def shown(dial: LrDial) -> dict[str, str]:
    """Row -> the "lr ×" cell as the table renders it."""
    pairs = re.findall(
        r'fw-lr-path"[^>]*>([^<]*)</td><td class="fw-lr-mult"[^>]*>([^<]*)<', dial.table.value
    )
    return dict(pairs)


def test_modes_and_row_edit_drive_the_table_and_the_spec() -> None:
    model = model3()
    freeze(model, "stem")
    dial = LrDial(model, lr=1e-3)
    assert shown(dial) == {"stem": "0 (frozen)", "body": "1", "head": "1"}
    dial.factor.value = 0.5
    dial.mode.value = "layer_decay"
    assert shown(dial) == {"stem": "0 (frozen)", "body": "0.5", "head": "1"}
    dial.row_path.value, dial.row_mult.value = "body.b", 2.0
    dial.set_button.click()
    assert shown(dial) == {"stem": "0 (frozen)", "body": "mixed", "head": "1", "body.b": "2"}
    spec = dial.spec()
    assert dict(spec.lr_mult)["body.b"] == 2.0 and spec.frozen == ("stem",)
    # What the table shows is what trains: the saved spec through param_groups.
    table = param_lr_table(param_groups(model, 1e-3, spec=FreezeSpec.from_json(spec.to_json())))
    assert table["body.a.weight"] == 5e-4 and table["body.b.bias"] == 2e-3
    assert "stem.weight" not in table
    assert '"body.b": 2.0' in html.unescape(dial.code.value)  # the torch code view writes it


def test_bad_settings_show_one_line_and_keep_the_last_good_state() -> None:
    dial = LrDial(model3())
    dial.mode.value = "layer_decay"
    good = dict(dial.multipliers)
    dial.factor.value = 1.5
    assert dial.messages.last_error is not None
    assert "layer_decay must be in (0, 1]" in dial.messages.last_error
    assert dial.multipliers == good
    dial.factor.value = 0.75
    assert dial.messages.last_error is None
    dial.set_row("body.c", 2.0)
    assert "Did you mean" in (dial.messages.last_error or "") and "body.c" not in dial.edits
    dial.target.value = "timm"
    assert "cannot express" in dial.code.value and "Traceback" not in dial.code.value


@pytest.mark.slow
def test_finetune_panel_shows_head_then_all_rates_before_the_run_and_uses_them() -> None:
    model = tiny_conv(num_classes=4)
    freeze(model)
    unfreeze(model, "fc")
    frozen_groups = [
        n for n, c in model.named_children() if any(True for _ in c.parameters()) and n != "fc"
    ]
    panel = FineTunePanel(lambda: model, image_size=16)
    panel.lr.value, panel.epochs.value = 0.01, 1
    panel.schedule.choice.value = "head-then-all"
    assert "needs at least 2 epochs" in panel.schedule.plan.value  # said before any run
    panel.epochs.value = 2
    plan = html.unescape(re.sub("<[^>]+>", "", panel.schedule.plan.value))
    assert "epoch 2: groups already training drop to lr 0.005" in plan
    released = [line.split("unfreeze ")[1].split(" at")[0] for line in plan.splitlines()[2:]]
    assert released == frozen_groups == ["conv1", "bn1", "conv2", "bn2"]
    panel.num_classes.value, panel.batch_size.value = 4, 16
    panel.run_button.click()
    panel.wait(120)
    report = panel.last_report
    assert report is not None and report.ok, panel.messages.last_error
    planned = [line.split(" at lr ")[1] for line in plan.splitlines() if "unfreeze" in line]
    assert [f"{u.lr:.3g}" for u in report.unfreeze_events] == planned
    assert all(p.requires_grad for p in model.parameters())


def test_explorer_lr_control_follows_ticks_and_feeds_the_finetune() -> None:
    from freeze_widgets import FreezeExplorer

    model = model3()
    ex = FreezeExplorer(model)
    try:
        ex.panels.open_lr.value = True
        dial = ex.panels.lr_dial
        assert shown(dial) == {"stem": "1", "body": "1", "head": "1"}
        assert ex.panels._lr_groups() is None  # all 1: the fine-tune keeps one group
        ex.tick("stem", True)
        assert shown(dial)["stem"] == "0 (frozen)"  # the tick redraws the open control
        dial.mode.value = "discriminative"
        dial.lo.value = 0.25
        assert shown(dial) == {"stem": "0 (frozen)", "body": "0.5", "head": "1"}
        assert ex.panels._lr_groups() == {"lr_mult": {"stem": 0.25, "body": 0.5, "head": 1.0}}
        assert ex.finetune._options()["lr_groups"] == ex.panels._lr_groups()
    finally:
        ex.close()


def test_explorer_saves_and_loads_the_multipliers_and_the_code_view_writes_them(
    tmp_path: Path,
) -> None:
    from freeze_widgets import FreezeExplorer

    ex = FreezeExplorer(model3())
    try:
        ex.tick("stem", True)
        ex.panels.lr_dial.set_row("body.b", 4.0)
        spec = ex.spec()
        assert dict(spec.lr_mult)["body.b"] == 4.0 and spec.frozen == ("stem",)
        ex.toolbar.spec_path.value = str(tmp_path / "spec.json")
        ex._on_save()
        assert '"version": 2' in (tmp_path / "spec.json").read_text()
        other = FreezeExplorer(model3())
        try:
            other.toolbar.spec_path.value = str(tmp_path / "spec.json")
            other._on_load()
            assert other.messages.last_error is None
            assert other.spec() == spec
            assert shown(other.panels.lr_dial)["body.b"] == "4"
        finally:
            other.close()
    finally:
        ex.close()
    # The code view (spec.to_code) reproduces freeze and rates without freeze_widgets.
    fresh = model3()
    scope: dict[str, object] = {"model": fresh}
    exec(spec.to_code(), scope)
    names = {id(p): n for n, p in fresh.named_parameters()}
    optimizer = scope["optimizer"]
    assert isinstance(optimizer, torch.optim.Optimizer)
    got = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert got == pytest.approx(param_lr_table(param_groups(fresh, 1e-3, spec=spec)))
    assert got["body.b.weight"] == pytest.approx(4e-3) and "stem.weight" not in got
