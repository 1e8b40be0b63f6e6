"""Lightning's freezing semantics natively: train_bn, module objects, and the param-group step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from freeze_widgets import freeze
from freeze_widgets.training.unfreeze import unfreeze_and_add_param_group

from .conftest import model_fingerprint


def _model() -> nn.Module:
    torch.manual_seed(0)  # the model of Lightning's own fine-tuning tests
    return nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))


def _grads(model: nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_freeze_with_train_bn_and_nested_module_objects_matches_lightning() -> None:
    from lightning.pytorch.callbacks import BaseFinetuning

    ours, theirs = _model(), _model()
    theirs[1].weight.requires_grad_(False)  # train_bn makes it trainable again
    ours[1].weight.requires_grad_(False)
    BaseFinetuning.freeze([theirs[0], [theirs[1]]], train_bn=True)
    freeze(ours, [ours[0], [ours[1]]], train_bn=True)  # type: ignore[arg-type]
    assert (
        _grads(ours)
        == _grads(theirs)
        == {
            "0.weight": False,
            "0.bias": False,
            "1.weight": True,
            "1.bias": True,
            "3.weight": True,
            "3.bias": True,
        }
    )
    before = ours[1].running_mean.clone()
    ours.train()(torch.randn(8, 32))
    assert not torch.equal(ours[1].running_mean, before)  # BatchNorm keeps training


def test_a_module_of_another_model_is_refused_and_nothing_changes() -> None:
    model, other = _model(), _model()
    before = model_fingerprint(model)
    with pytest.raises(ValueError, match="not part of this model"):
        freeze(model, model[0], other[3])
    assert model_fingerprint(model) == before


def test_unfreeze_and_add_param_group_matches_lightning_then_audits() -> None:
    from lightning.pytorch.callbacks import BaseFinetuning

    ours, theirs = _model(), _model()
    for m in (ours, theirs):
        BaseFinetuning.freeze([m[0], m[1]], train_bn=False)
    opt_ours = torch.optim.SGD(ours[3].parameters(), lr=0.1)
    opt_theirs = torch.optim.SGD(theirs[3].parameters(), lr=0.1)
    BaseFinetuning.unfreeze_and_add_param_group([theirs[0], theirs[1]], opt_theirs)
    result = unfreeze_and_add_param_group(ours, opt_ours, [ours[0], "1"])
    assert _grads(ours) == _grads(theirs)
    assert ours[1].track_running_stats and theirs[1].track_running_stats
    assert [g["lr"] for g in opt_ours.param_groups] == [g["lr"] for g in opt_theirs.param_groups]
    assert result.lr == pytest.approx(0.01)
    index = {id(p): n for n, p in ours.named_parameters()}
    assert sorted(index[id(p)] for p in opt_ours.param_groups[1]["params"]) == [
        "0.bias",
        "0.weight",
        "1.bias",
        "1.weight",
    ]
    assert result.findings == [] and result.added == 32 * 32 + 32 + 32 + 32


def test_train_bn_false_keeps_batchnorm_frozen_where_lightning_leaves_it_out_of_the_optimizer() -> (
    None
):
    from lightning.pytorch.callbacks import BaseFinetuning

    from freeze_widgets import audit_optimizer

    ours, theirs = _model(), _model()
    for m in (ours, theirs):
        BaseFinetuning.freeze([m[0], m[1]], train_bn=False)
    opt_ours = torch.optim.SGD(ours[3].parameters(), lr=0.1)
    opt_theirs = torch.optim.SGD(theirs[3].parameters(), lr=0.1)
    BaseFinetuning.unfreeze_and_add_param_group([theirs[0], theirs[1]], opt_theirs, train_bn=False)
    result = unfreeze_and_add_param_group(ours, opt_ours, [ours[0], ours[1]], train_bn=False)
    lost = {f.kind for f in audit_optimizer(theirs, opt_theirs)}
    assert "trainable_not_in_optimizer" in lost  # Lightning: BatchNorm trainable, never stepped
    assert result.findings == [] and not ours[1].weight.requires_grad


def test_a_zero_bias_equal_to_one_already_in_the_optimizer_is_still_added() -> None:
    from lightning.pytorch.callbacks import BaseFinetuning

    def build() -> nn.Module:
        m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        with torch.no_grad():
            m[0].bias.zero_()
            m[1].bias.zero_()
        m[0].requires_grad_(False)
        return m

    ours, theirs = build(), build()
    opt_theirs = torch.optim.SGD(theirs[1].parameters(), lr=0.1)
    BaseFinetuning.unfreeze_and_add_param_group(theirs[0], opt_theirs)
    assert len(opt_theirs.param_groups[1]["params"]) == 1  # Lightning compares values: bias lost
    opt_ours = torch.optim.SGD(ours[1].parameters(), lr=0.1)
    result = unfreeze_and_add_param_group(ours, opt_ours, ours[0])
    assert len(opt_ours.param_groups[1]["params"]) == 2 and result.findings == []


@pytest.mark.parametrize(
    ("kwargs", "error"), [({"lr": -1.0}, ValueError), ({"lr": "x"}, TypeError)]
)
def test_bad_arguments_leave_model_and_optimizer_unchanged(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    model = _model()
    freeze(model, "0")
    opt = torch.optim.SGD(model[3].parameters(), lr=0.1)
    before, groups = model_fingerprint(model), copy.copy(opt.param_groups)
    with pytest.raises(error):
        unfreeze_and_add_param_group(model, opt, "0", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="No module or parameter"):
        unfreeze_and_add_param_group(model, opt, ["0", "nope"])
    assert model_fingerprint(model) == before and opt.param_groups == groups
