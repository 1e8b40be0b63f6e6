"""freeze / unfreeze / freeze_to, the BatchNorm policies and FreezeSpec."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeSpec, FrozenBatchNorm, freeze, freeze_to, unfreeze
from freeze_widgets.freezing.targets import top_level_groups

from .conftest import Nested, make_seq_bn, requires_grad_map


def frozen_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def test_freeze_paths_and_patterns(resnet18: nn.Module) -> None:
    change = freeze(resnet18, "layer1")
    assert frozen_names(resnet18) == {
        n for n, _ in resnet18.named_parameters() if n.startswith("layer1.")
    }
    assert set(change.frozen) == frozen_names(resnet18)
    unfreeze(resnet18)
    freeze(resnet18, "*.bn1")
    expected = {n for n, _ in resnet18.named_parameters() if ".bn1." in n}
    assert frozen_names(resnet18) == expected
    assert "bn1.weight" not in expected  # "*.bn1" needs a dot before bn1
    unfreeze(resnet18)
    freeze(resnet18, "layer2.*")
    assert frozen_names(resnet18) == {
        n for n, _ in resnet18.named_parameters() if n.startswith("layer2.")
    }
    unfreeze(resnet18)
    freeze(resnet18, "*.bias")
    assert frozen_names(resnet18) == {
        n for n, _ in resnet18.named_parameters() if n.endswith(".bias")
    }


def test_freeze_returns_only_what_changed(seq_bn: nn.Module) -> None:
    assert set(freeze(seq_bn, "0").frozen) == {"0.weight", "0.bias"}
    change = freeze(seq_bn, "0", "3")
    assert set(change.frozen) == {"3.weight", "3.bias"}
    assert set(unfreeze(seq_bn, "3").unfrozen) == {"3.weight", "3.bias"}
    assert not unfreeze(seq_bn, "3")


@pytest.mark.parametrize("target", ["layr1", "layer1.9", "*.bn9", "fc.weights"])
def test_unknown_target_names_close_matches_and_changes_nothing(
    resnet18: nn.Module, target: str
) -> None:
    before = requires_grad_map(resnet18)
    with pytest.raises(ValueError, match="No module or parameter matches") as info:
        freeze(resnet18, "layer2", target)  # the valid first target must not be applied
    assert requires_grad_map(resnet18) == before
    if target == "layr1":
        assert "'layer1'" in str(info.value)
    if target == "fc.weights":
        assert "'fc.weight'" in str(info.value)


def test_bad_policy(seq_bn: nn.Module) -> None:
    with pytest.raises(ValueError, match="bn must be one of"):
        freeze(seq_bn, "1", bn="fixed")
    assert all(p.requires_grad for p in seq_bn.parameters())


def test_freeze_clears_stale_grad_so_momentum_cannot_move_it(seq_bn: nn.Module) -> None:
    opt = torch.optim.SGD(seq_bn.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x = torch.randn(8, 32)
    seq_bn(x).sum().backward()
    opt.step()
    freeze(seq_bn, "0")
    assert seq_bn[0].weight.grad is None
    before = seq_bn[0].weight.detach().clone()
    opt.zero_grad()
    seq_bn(x).sum().backward()
    opt.step()
    assert torch.equal(seq_bn[0].weight, before)


def test_stale_grad_trap_is_real() -> None:
    """Control: plain requires_grad_(False) leaves .grad, and SGD momentum moves the weight."""
    model = make_seq_bn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(8, 32)).sum().backward()
    opt.step()
    model[0].requires_grad_(False)
    before = model[0].weight.detach().clone()
    opt.step()  # stale grad + momentum buffer
    assert not torch.equal(model[0].weight, before)


def _bn_stats_after_training_step(
    model: nn.Module, bn: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    before = bn.running_mean.clone(), bn.running_var.clone()
    model.train()
    model(torch.randn(16, 32) * 3 + 1)
    return before


def test_bn_eval_policy_survives_model_train(seq_bn: nn.Module) -> None:
    freeze(seq_bn, "1", bn="eval")
    seq_bn.train()
    assert not seq_bn[1].training
    assert seq_bn[0].training
    mean, var = _bn_stats_after_training_step(seq_bn, seq_bn[1])
    assert torch.equal(seq_bn[1].running_mean, mean)
    assert torch.equal(seq_bn[1].running_var, var)
    # The model still pickles and deep-copies with the policy in place.
    clone = copy.deepcopy(seq_bn)
    clone.train()
    assert not clone[1].training
    restored = pickle.loads(pickle.dumps(seq_bn))
    assert not restored.train()[1].training
    unfreeze(seq_bn, "1")
    assert seq_bn[1].training
    mean, _ = _bn_stats_after_training_step(seq_bn, seq_bn[1])
    assert not torch.equal(seq_bn[1].running_mean, mean)


def test_bn_train_policy_keeps_statistics_updating(seq_bn: nn.Module) -> None:
    freeze(seq_bn, "1", bn="train")
    assert not seq_bn[1].weight.requires_grad
    mean, _ = _bn_stats_after_training_step(seq_bn, seq_bn[1])
    assert not torch.equal(seq_bn[1].running_mean, mean)  # the trap, by choice


def test_bn_frozen_policy_swaps_and_round_trips(seq_bn: nn.Module) -> None:
    original = seq_bn[1]
    x = torch.randn(16, 32)
    seq_bn.eval()
    expected = seq_bn(x)
    change = freeze(seq_bn, "1", bn="frozen")
    assert change.batchnorm == (("1", "train", "frozen"),)
    swapped = seq_bn[1]
    assert isinstance(swapped, FrozenBatchNorm)
    assert swapped.weight is original.weight  # same tensors: counts and optimizer unaffected
    seq_bn.train()
    torch.testing.assert_close(seq_bn(x), expected)  # fixed statistics even in train mode
    assert torch.equal(swapped.running_mean, original.running_mean)
    unfreeze(seq_bn, "1")
    assert seq_bn[1] is original
    assert original.weight.requires_grad


def test_freeze_whole_model_puts_every_bn_in_policy(nested: Nested) -> None:
    freeze(nested)
    nested.train()
    assert not nested.body.stem.bn.training
    assert not nested.body.block.bn.training
    assert nested.body.training


def test_freeze_to(resnet18: nn.Module) -> None:
    assert top_level_groups(resnet18) == [
        "conv1",
        "bn1",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "fc",
    ]
    freeze_to(resnet18, -1)
    assert {n for n, p in resnet18.named_parameters() if p.requires_grad} == {
        "fc.weight",
        "fc.bias",
    }
    freeze_to(resnet18, -2)
    trainable = {n.split(".")[0] for n, p in resnet18.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    freeze_to(resnet18, 3)
    trainable = {n.split(".")[0] for n, p in resnet18.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4", "fc"}
    freeze_to(resnet18, 0)
    assert all(p.requires_grad for p in resnet18.parameters())
    with pytest.raises(ValueError, match="out of range"):
        freeze_to(resnet18, 8)


def test_freeze_to_counts_root_params_first(root_param: nn.Module) -> None:
    assert top_level_groups(root_param) == ["class_token", "proj", "heads"]
    freeze_to(root_param, 1)
    assert frozen_names(root_param) == {"class_token"}


# --------------------------------------------------------------------------- FreezeSpec


def test_spec_is_shortest_path_list(resnet18: nn.Module) -> None:
    freeze(resnet18, "layer1", "layer2.0", "layer2.1", "fc.bias", "conv1")
    spec = FreezeSpec.from_model(resnet18)
    assert spec.frozen == ("conv1", "layer1", "layer2", "fc.bias")
    freeze(resnet18)
    assert FreezeSpec.from_model(resnet18).frozen == ("",)


def test_spec_json_round_trip_and_apply(resnet18: nn.Module) -> None:
    freeze(resnet18, "layer1", "*.bn2", bn="frozen")
    spec = FreezeSpec.from_model(resnet18)
    assert spec.bn == "frozen"
    again = FreezeSpec.from_json(spec.to_json())
    assert again == spec
    from torchvision.models import resnet18 as build

    fresh = build(weights=None)
    fresh.layer4.requires_grad_(False)  # apply must also unfreeze what the spec does not list
    again.apply(fresh)
    assert requires_grad_map(fresh) == requires_grad_map(resnet18)
    assert isinstance(fresh.layer1[0].bn1, FrozenBatchNorm)


def test_spec_apply_unknown_path_leaves_model_unchanged(resnet18: nn.Module) -> None:
    freeze(resnet18, "layer4")
    before = requires_grad_map(resnet18)
    with pytest.raises(ValueError, match="layer3"):
        FreezeSpec(("layer1", "layer33")).apply(resnet18)
    assert requires_grad_map(resnet18) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", '"frozen" list'),
        ('{"frozen": [1]}', "list of path strings"),
        ('{"frozen": [], "bn": "maybe"}', "bn must be one of"),
    ],
)
def test_spec_from_bad_json(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FreezeSpec.from_json(text)


@pytest.mark.parametrize("fixture", ["resnet18", "tied", "root_param", "nested"])
def test_to_code_reproduces_requires_grad_map(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    paths = [n for n, _ in model.named_parameters()]
    freeze(model, paths[0], paths[-1])
    if fixture == "resnet18":
        freeze(model, "layer1", "layer3.1")
    code = FreezeSpec.from_model(model).to_code()
    assert "freeze_widgets" not in code.replace("without freeze_widgets", "")
    fresh = copy.deepcopy(model)
    unfreeze(fresh)
    fresh.train()
    namespace = {"model": fresh}
    exec(compile(code, "<to_code>", "exec"), namespace)
    assert requires_grad_map(fresh) == requires_grad_map(model)
    if fixture == "resnet18":
        fresh.train()
        assert not fresh.layer1[0].bn1.training  # the BatchNorm policy comes along
        assert fresh.layer2[0].bn1.training


def test_to_code_whole_model(seq_bn: nn.Module) -> None:
    freeze(seq_bn)
    fresh = make_seq_bn()
    exec(FreezeSpec.from_model(seq_bn).to_code(), {"model": fresh})
    assert not any(p.requires_grad for p in fresh.parameters())
