"""The explorer notices a model changed in another cell and never acts on rows no longer there."""

from __future__ import annotations

import html

import pytest
import torch
from torch import nn

from freeze_widgets.ui.explorer import FreezeExplorer


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16))
        self.layer4 = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(self.body(x)))


def independent(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def refused(ex: FreezeExplorer) -> str:
    return html.unescape(ex.messages.value)


def test_replaced_head_is_reread_before_a_tick_acts() -> None:
    model = Small()
    ex = FreezeExplorer(model)
    model.fc = nn.Linear(16, 3)  # in another cell
    ex.tick("fc")
    assert "changed outside the explorer" in refused(ex)
    assert all(p.requires_grad for p in model.fc.parameters())  # the stale click did nothing
    assert ex.tree.node("fc").total == 16 * 3 + 3  # re-read
    trainable, total = independent(model)
    assert (ex.counts.trainable, ex.counts.total) == (trainable, total)
    ex.tick("fc")  # now it acts, on the new head
    assert not any(p.requires_grad for p in model.fc.parameters())
    assert ex.state("fc") == "frozen"
    ex.close()


def test_removed_layer_is_never_acted_on() -> None:
    model = Small()
    ex = FreezeExplorer(model)
    model.layer4 = nn.Identity()
    ex.freeze_up_to("layer4")
    assert "changed outside the explorer" in refused(ex)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="Unknown module tree path"):
        ex.tree.node("layer4.weight")
    assert ex.tree.node("layer4").total == 0
    trainable, total = independent(model)
    assert (ex.counts.trainable, ex.counts.total) == (trainable, total)
    ex.close()


def test_replaced_parameter_and_freeze_all_are_caught() -> None:
    model = Small()
    ex = FreezeExplorer(model)
    model.fc.weight = nn.Parameter(torch.zeros(10, 16))
    ex.toolbar.freeze_all.click()
    assert "changed outside the explorer" in refused(ex)
    assert all(p.requires_grad for p in model.parameters())
    ex.toolbar.freeze_all.click()
    assert independent(model)[0] == 0
    ex.close()


def test_an_unchanged_model_is_not_refused() -> None:
    model = Small()
    ex = FreezeExplorer(model)
    model.fc.weight.requires_grad_(False)  # flags alone: not a structure change
    ex.tick("body")
    assert "changed outside" not in refused(ex)
    assert ex.state("body") == "frozen"
    ex.close()


def test_the_explorers_own_batchnorm_swap_is_not_a_change_from_outside() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    ex = FreezeExplorer(model)
    ex.toolbar.bn.value = "frozen"
    ex.tick("1")  # swaps the BatchNorm for FrozenBatchNorm: a module replaced, by us
    assert type(model[1]).__name__ == "FrozenBatchNorm"
    ex.tick("0")
    assert "changed outside" not in refused(ex)
    assert ex.state("0") == "frozen"
    ex.close()
