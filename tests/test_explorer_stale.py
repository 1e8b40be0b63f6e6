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


def _wide(n: int) -> nn.Sequential:
    """More modules than the full check covers: the hooks must notice the change."""
    return nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(n)])


def test_a_large_model_is_watched_through_registration_hooks() -> None:
    from freeze_widgets.ui import staleness

    model = _wide(400)  # 1,201 modules
    assert sum(1 for _ in model.modules()) > staleness.FULL_CHECK_MODULES
    ex = FreezeExplorer(model)
    ex.tick("0")
    assert ex.state("0") == "frozen" and not model[0][0].weight.requires_grad
    model[399][0] = nn.Linear(2, 5)  # in another cell, far from the row ticked next
    ex.tick("1")
    assert "changed outside the explorer" in refused(ex)
    assert model[1][0].weight.requires_grad  # the stale click did nothing
    trainable, total = independent(model)
    assert (ex.counts.trainable, ex.counts.total) == (trainable, total)  # re-read
    ex.tick("1")  # after the re-read the tick acts
    assert not model[1][0].weight.requires_grad
    ex.close()


def test_a_replaced_parameter_of_a_large_model_is_noticed() -> None:
    model = _wide(400)
    ex = FreezeExplorer(model)
    model[5][0].weight = nn.Parameter(torch.zeros(2, 2))  # a new, trainable object
    ex.tick("5")
    assert "changed outside the explorer" in refused(ex)
    ex.close()


def test_closing_removes_the_global_hooks() -> None:
    from torch.nn.modules import module as torch_module

    before = len(torch_module._global_module_registration_hooks)
    ex = FreezeExplorer(_wide(2))
    assert len(torch_module._global_module_registration_hooks) == before + 1
    ex.close()
    assert len(torch_module._global_module_registration_hooks) == before


def test_a_deleted_module_of_a_small_model_is_noticed() -> None:
    model = Small()
    ex = FreezeExplorer(model)
    del model.layer4  # no registration hook sees a delete: the full check on small models does
    model.layer4 = nn.Identity()
    ex.tick("fc")
    assert "changed outside the explorer" in refused(ex)
    ex.close()
