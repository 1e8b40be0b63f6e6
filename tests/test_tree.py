"""ModuleTree and count_parameters against independent computations."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from freeze_widgets import ModuleTree, count_parameters, freeze

from .conftest import independent_counts


def assert_tree_matches_model(tree: ModuleTree) -> None:
    """Every node's counts equal a direct computation on its module."""
    for node in tree:
        if node.kind == "parameter":
            p = tree.model.get_parameter(node.path)
            expected = (p.numel(), p.numel() if p.requires_grad else 0)
        else:
            module = tree.module(node.path)
            assert module is not None
            expected = independent_counts(module)
        assert (node.total, node.trainable) == expected, node.path


@pytest.mark.parametrize("fixture", ["seq_bn", "nested", "tied", "root_param", "resnet18"])
def test_counts_equal_independent_computation(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    tree = ModuleTree(model)
    total, trainable = independent_counts(model)
    assert tree.counts.total == total == count_parameters(model).total
    assert tree.counts.trainable == trainable
    assert_tree_matches_model(tree)


def test_resnet18_known_total(resnet18: nn.Module) -> None:
    assert count_parameters(resnet18).total == 11_689_512
    tree = ModuleTree(resnet18)
    assert [tree.nodes[i].path for i in tree.root.children][:4] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
    ]
    assert tree.node("layer1.0.conv1").type_name == "Conv2d"
    assert tree.node("layer1").type_name == "Sequential"
    assert tree.node("relu").state == "empty"


def test_str_of_counts(resnet18: nn.Module) -> None:
    freeze(resnet18)
    resnet18.fc.bias.requires_grad_(True)
    assert str(count_parameters(resnet18)) == "trainable 1,000 of 11,689,512 (0.0086%)"
    resnet18.fc.weight.requires_grad_(True)
    assert str(count_parameters(resnet18)) == "trainable 513,000 of 11,689,512 (4.4%)"


def test_tied_weights_counted_once_and_reported(tied: nn.Module) -> None:
    tree = ModuleTree(tied)
    naive = sum(p.numel() for m in tied.modules() for p in m.parameters(recurse=False))
    assert tree.counts.total < naive  # the naive per-module sum double counts
    assert tree.counts.total == sum(p.numel() for p in tied.parameters())
    assert tree.node("decoder").shared_with == ("embed",)
    assert tree.node("embed").shared_with == ("decoder",)
    # The same Linear appears as `shared` and as `encoder.0`.
    assert "encoder.0" in tree.node("shared").shared_with
    tree.set_frozen("decoder", True)
    assert tree.node("embed").state == "frozen"  # it is the same tensor
    assert_tree_matches_model(tree)
    assert tree.counts.trainable == independent_counts(tied)[1]


def test_parent_owned_parameter_has_its_own_node(root_param: nn.Module, nested: nn.Module) -> None:
    tree = ModuleTree(root_param)
    token = tree.node("class_token")
    assert token.kind == "parameter"
    assert token.shape == (1, 1, 8)
    assert tree.root.own == 8
    tree.set_frozen("class_token", True)
    assert not root_param.class_token.requires_grad
    assert root_param.proj.weight.requires_grad
    assert tree.root.state == "partial"
    assert tree.counts.frozen == 8
    assert ModuleTree(nested).node("scale").own == 4


def test_states(seq_bn: nn.Module) -> None:
    tree = ModuleTree(seq_bn)
    assert tree.root.state == "trainable"
    tree.set_frozen("0", True)
    assert tree.node("0").state == "frozen"
    assert tree.node("2").state == "empty"
    assert tree.root.state == "partial"
    seq_bn[3].bias.requires_grad_(False)
    tree.refresh()
    assert tree.node("3").state == "partial"
    tree.set_frozen("", True)
    assert tree.root.state == "frozen"
    assert all(not p.requires_grad for p in seq_bn.parameters())


def test_set_frozen_touches_only_subtree_and_ancestors(resnet18: nn.Module) -> None:
    tree = ModuleTree(resnet18)
    changed = tree.set_frozen("layer2.0.conv1", True)
    assert [n.path for n in changed] == ["", "layer2", "layer2.0", "layer2.0.conv1"]
    changed = tree.set_frozen("layer3", True)
    paths = {n.path for n in changed}
    assert paths == {"", "layer3"} | {n.path for n in tree.subtree("layer3") if n.total}
    assert tree.set_frozen("layer3", True) == []  # already frozen: nothing to send


def test_random_toggles_stay_consistent(resnet18: nn.Module) -> None:
    tree = ModuleTree(resnet18)
    rng = random.Random(0)
    paths = [n.path for n in tree]
    for _ in range(60):
        tree.set_frozen(rng.choice(paths), rng.random() < 0.6)
        total, trainable = independent_counts(resnet18)
        assert (tree.counts.total, tree.counts.trainable) == (total, trainable)
    assert_tree_matches_model(tree)


def test_refresh_after_outside_change(resnet18: nn.Module) -> None:
    tree = ModuleTree(resnet18)
    resnet18.layer4.requires_grad_(False)
    assert tree.node("layer4").state == "trainable"  # stale until refreshed
    tree.refresh()
    assert tree.node("layer4").state == "frozen"
    resnet18.fc = nn.Linear(512, 10)
    tree.refresh()
    assert tree.node("fc").total == 5130


def test_unknown_node_names_close_matches(resnet18: nn.Module) -> None:
    tree = ModuleTree(resnet18)
    with pytest.raises(ValueError, match="layer1"):
        tree.node("layr1")


def test_meta_device_tree() -> None:
    from torchvision.models import resnet50

    with torch.device("meta"):
        model = resnet50()
    tree = ModuleTree(model)
    assert tree.counts.total == 25_557_032
    tree.set_frozen("layer1", True)
    assert tree.counts.frozen == sum(p.numel() for p in model.layer1.parameters())


def test_frozen_bn_swap_updates_tree_type(seq_bn: nn.Module) -> None:
    tree = ModuleTree(seq_bn)
    changed = tree.set_frozen("1", True, bn="frozen")
    assert tree.node("1").type_name == "FrozenBatchNorm"
    assert "1" in {n.path for n in changed}
    tree.set_frozen("1", False)
    assert tree.node("1").type_name == "BatchNorm1d"
    assert isinstance(seq_bn[1], nn.BatchNorm1d)
    assert_tree_matches_model(tree)
