"""Lightning's fine-tuning-callback cases (BatchNorm and param groups), Lightning as the oracle.

Ported from ``tests_pytorch/callbacks/test_finetuning_callback.py``: the same models, frozen by
``BaseFinetuning`` and by freeze_widgets, must end with the same ``requires_grad`` and the same
optimizer param groups.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from freeze_widgets import count_parameters, freeze, unfreeze
from freeze_widgets.freezing.bn import iter_batchnorms
from freeze_widgets.training.schedule import unfreeze_group

from .conftest import requires_grad_map

finetuning = pytest.importorskip("lightning.pytorch.callbacks.finetuning")
BaseFinetuning = finetuning.BaseFinetuning


class ConvBlock(nn.Module):
    """Lightning's ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3)
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.act(self.conv(x)))


class ConvBlockParam(nn.Module):
    """Lightning's ConvBlockParam: a parameter owned beside children."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.module_dict = nn.ModuleDict({"conv": nn.Conv2d(in_channels, out_channels, 3)})
        self.parent_param = nn.Parameter(torch.zeros(1))
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.act(self.module_dict["conv"](x))) + self.parent_param


def nested() -> nn.Sequential:
    """Lightning's test_deep_nested_model model (smaller channels)."""
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            [
                ("encoder", nn.Sequential(ConvBlockParam(3, 8), ConvBlock(8, 16))),
                ("decoder", ConvBlock(16, 10)),
            ]
        )
    )


def backbone() -> nn.Sequential:
    """Lightning's FreezeUnfreezeTestModel backbone."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))


def _bn_paths(model: nn.Module, under: str = "") -> list[str]:
    return [p for p, _ in iter_batchnorms(model) if p.startswith(under)]


@pytest.mark.parametrize("train_bn", [True, False])
def test_freeze_matches_lightning_with_and_without_train_bn(train_bn: bool) -> None:
    theirs, ours = backbone(), backbone()
    BaseFinetuning.freeze(theirs, train_bn=train_bn)
    freeze(ours)
    if train_bn:
        unfreeze(ours, *_bn_paths(ours))
    assert requires_grad_map(ours) == requires_grad_map(theirs)
    # Frozen BatchNorm keeps its statistics in a training step (Lightning: track_running_stats
    # off; here: eval mode that survives model.train()).
    if not train_bn:
        for model in (theirs, ours):
            stats = model[1].running_mean.clone()
            model.train()(torch.randn(4, 32))
            assert torch.equal(model[1].running_mean, stats)


def test_deep_nested_model_counts_match_lightning() -> None:
    theirs, ours = nested(), nested()
    BaseFinetuning.freeze(theirs.encoder, train_bn=True)
    freeze(ours, "encoder")
    unfreeze(ours, *_bn_paths(ours, "encoder"))
    assert requires_grad_map(ours) == requires_grad_map(theirs)
    assert not ours.encoder[0].parent_param.requires_grad  # owned beside children: frozen too
    trainable_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert count_parameters(ours).trainable == trainable_theirs
    BaseFinetuning.make_trainable(theirs)
    unfreeze(ours)
    # Lightning's own count: the encoder's 9 tensors (conv and bn of each block, parent_param).
    encoder = list(BaseFinetuning.filter_params(theirs.encoder, train_bn=True))
    assert len(encoder) == 9 == len(list(ours.encoder.parameters()))


def test_unfreeze_and_add_param_group_matches_lightning() -> None:
    theirs, ours = nested(), nested()
    for model in (theirs, ours):
        freeze(model, "encoder")
    opt_theirs = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.1)
    opt_ours = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.1)
    BaseFinetuning.unfreeze_and_add_param_group(theirs.encoder[1], opt_theirs, lr=0.05)
    added = unfreeze_group(ours, opt_ours, "encoder.1", 0.05)
    names_theirs = {id(p): n for n, p in theirs.named_parameters()}
    names_ours = {id(p): n for n, p in ours.named_parameters()}
    groups_theirs = [
        (sorted(names_theirs[id(p)] for p in g["params"]), g["lr"]) for g in opt_theirs.param_groups
    ]
    groups_ours = [
        (sorted(names_ours[id(p)] for p in g["params"]), g["lr"]) for g in opt_ours.param_groups
    ]
    assert groups_ours == groups_theirs and added == len(groups_theirs[1][0])
    assert requires_grad_map(ours) == requires_grad_map(theirs)
    # Released twice: both add nothing the optimizer already has.
    with pytest.warns(UserWarning, match="already exist within another group"):
        BaseFinetuning.unfreeze_and_add_param_group(theirs.encoder[1], opt_theirs, lr=0.05)
    assert unfreeze_group(ours, opt_ours, "encoder.1", 0.05) == 0
    assert len(opt_ours.param_groups) == len(opt_theirs.param_groups) == 2


def test_freezing_a_copy_leaves_the_original_like_lightning() -> None:
    original = nested()
    before = requires_grad_map(original)
    freeze(copy.deepcopy(original), "encoder")
    assert requires_grad_map(original) == before


def test_a_parameter_equal_in_value_to_one_in_the_optimizer_is_still_added() -> None:
    """Where the peer differs: Lightning's filter_on_optimizer compares values (torch.equal),
    so a zero-initialised parameter is skipped when any zero tensor of that shape is already
    in the optimizer; this tool compares identity."""
    theirs, ours = nested(), nested()
    for model in (theirs, ours):
        model.decoder.register_parameter("offset", nn.Parameter(torch.zeros(1)))
        freeze(model, "encoder")
    opt_theirs = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.1)
    opt_ours = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.1)
    with pytest.warns(UserWarning, match="already exist within another group"):
        BaseFinetuning.unfreeze_and_add_param_group(theirs.encoder[0], opt_theirs, lr=0.05)
    unfreeze_group(ours, opt_ours, "encoder.0", 0.05)
    in_theirs = {id(p) for g in opt_theirs.param_groups for p in g["params"]}
    in_ours = {id(p) for g in opt_ours.param_groups for p in g["params"]}
    assert id(theirs.encoder[0].parent_param) not in in_theirs  # skipped: equal to "offset"
    assert id(ours.encoder[0].parent_param) in in_ours  # trainable, so optimised
