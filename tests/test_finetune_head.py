"""The demo fine-tune leaves the user's model alone: the head kept when classes fit, a copy else."""

from __future__ import annotations

import html

import torch
from torch import nn
from torch.utils.data import TensorDataset

from freeze_widgets.ui.explorer import explore
from freeze_widgets.ui.finetune_head import data_classes, plan_head
from freeze_widgets.ui.finetune_panel import COPY, IN_PLACE, FineTunePanel

from .test_training import tiny_conv


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def three_classes() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(48, 3, 16, 16, generator=g), torch.arange(48) % 3)


def test_synthetic_demo_keeps_a_ten_class_head() -> None:
    model = tiny_conv(num_classes=10)  # like the quickstart's resnet18 with fc 512 -> 10
    head = model.fc
    ex = explore(model)
    panel = ex.finetune
    assert "keeps its 10 outputs" in panel.head_note.value
    assert panel.head_choice.layout.display == "none"  # nothing to choose
    panel.steps.value = 2
    panel.batch_size.value = 8
    panel.run(block=True)
    report = panel.last_report
    assert report is not None and report.ok, panel.messages.value
    assert report.head_replaced is None
    assert model.fc is head and model.fc.out_features == 10
    assert panel.trained_copy is None and panel.apply_button.layout.display == "none"
    ex.close()


def test_new_head_is_said_before_the_run_and_trains_a_copy_by_default() -> None:
    model = tiny_conv(num_classes=2)
    before = state(model)
    head = model.fc
    panel = FineTunePanel(lambda: model, data=three_classes())
    assert panel.data_field.layout.display == "none"  # data given: no field
    line = panel.head_note.value
    assert "3 classes" in line and "fc has 2 outputs" in line and "Linear(" in line
    assert panel.head_choice.layout.display == "" and panel.head_choice.value == COPY
    panel.steps.value = 3
    panel.batch_size.value = 8
    panel.run(block=True)
    report = panel.last_report
    assert report is not None and report.ok, panel.messages.value
    after = model.state_dict()
    assert model.fc is head and all(torch.equal(before[k], after[k]) for k in before)
    trained = panel.trained_copy
    assert trained is not None and trained.fc.out_features == 3
    assert panel.apply_button.layout.display == ""
    assert "your model is unchanged" in panel.messages.value
    panel.apply_button.click()
    assert model.fc.out_features == 3
    want = trained.state_dict()
    assert all(torch.equal(model.state_dict()[k], want[k]) for k in want)
    assert model.fc is not trained.fc  # the model owns its head, not the copy's
    assert panel.apply_button.layout.display == "none"
    panel.close()


def test_in_place_when_asked() -> None:
    model = tiny_conv(num_classes=2)
    panel = FineTunePanel(lambda: model, data=three_classes())
    panel.head_choice.value = IN_PLACE
    panel.steps.value = 2
    panel.batch_size.value = 8
    panel.run(block=True)
    assert panel.last_report is not None and panel.last_report.ok
    assert model.fc.out_features == 3 and panel.trained_copy is None
    panel.close()


def test_explore_passes_data_to_the_panel() -> None:
    data = three_classes()
    ex = explore(tiny_conv(num_classes=4), data=data)
    assert ex.finetune._data is data
    assert "TensorDataset you passed, 48 items" in ex.finetune.data_note.value
    assert "keeps its 4 outputs (the data's classes: 3 fit)" in html.unescape(
        ex.finetune.head_note.value
    )
    ex.close()


def test_data_field_and_class_counts(tmp_path: object) -> None:
    model = tiny_conv(num_classes=4)
    panel = FineTunePanel(lambda: model)
    assert "synthetic shapes" in panel.data_note.value
    panel.data_field.value = "digits"
    assert "handwritten digits" in panel.data_note.value
    assert "10 classes but fc has 4 outputs" in panel.head_note.value
    assert plan_head(model, "digits", 0).num_classes == 10
    assert plan_head(model, None, 0).num_classes == 4  # synthetic: 4 classes fit 4 outputs
    assert data_classes(three_classes()) == 3
    panel.close()
