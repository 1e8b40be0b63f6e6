"""freeze_through: everything up to and including a row freezes, everything after it trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freeze_widgets import FrozenBatchNorm, ModuleTree, freeze, freeze_through

from .conftest import independent_counts, requires_grad_map


def frozen_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def names_through(model: nn.Module, last: str) -> list[str]:
    """Independent reference: named_parameters() is module order, so cut after ``last``."""
    names = [n for n, _ in model.named_parameters()]
    return names[: names.index(last) + 1]


def test_nested_row_on_resnet18(resnet18: nn.Module) -> None:
    freeze(resnet18, "fc", "layer4")  # what comes after the row must end trainable
    change = freeze_through(resnet18, "layer2.0.conv2")
    expected = names_through(resnet18, "layer2.0.conv2.weight")  # conv2 has no bias
    assert frozen_names(resnet18) == expected
    assert "layer2.0.bn2.weight" not in expected and "layer1.1.bn2.bias" in expected
    assert set(change.frozen) == set(expected)
    assert set(change.unfrozen) == {n for n, _ in resnet18.named_parameters()} & {
        n for n in requires_grad_map(resnet18) if n.startswith(("fc.", "layer4."))
    }
    # The BatchNorm policy follows: frozen ones stay in eval, later ones train.
    resnet18.train()
    assert not resnet18.layer2[0].bn1.training
    assert resnet18.layer2[0].bn2.training and resnet18.layer4[0].bn1.training


def test_nested_row_on_a_transformer() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        num_hidden_layers=12,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=100,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    freeze_through(model, "model.layers.11")
    names = [n for n, _ in model.named_parameters()]
    last_in_row = [n for n in names if n.startswith("model.layers.11.")][-1]
    assert frozen_names(model) == names_through(model, last_in_row)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["model.norm.weight", "lm_head.weight"]
    freeze_through(model, "model.layers.3")  # moving the cut back unfreezes layers 4..11
    assert frozen_names(model) == names_through(
        model, "model.layers.3.post_attention_layernorm.weight"
    )


def test_parameters_owned_by_an_ancestor_come_before_its_children(root_param: nn.Module) -> None:
    freeze_through(root_param, "proj")
    assert frozen_names(root_param) == ["class_token", "proj.weight", "proj.bias"]
    freeze_through(root_param, "class_token")  # a parameter row
    assert frozen_names(root_param) == ["class_token"]


def test_parameter_less_rows_cut_like_any_row(resnet18: nn.Module) -> None:
    freeze_through(resnet18, "maxpool")  # ReLU / pooling rows are rows too
    assert frozen_names(resnet18) == ["conv1.weight", "bn1.weight", "bn1.bias"]
    freeze_through(resnet18, "")
    assert independent_counts(resnet18)[1] == 0


def test_tied_parameter_across_the_cut_ends_frozen(tied: nn.Module) -> None:
    change = freeze_through(tied, "embed")
    assert not tied.decoder.weight.requires_grad  # the same tensor as embed.weight
    assert change.frozen == ("embed.weight",)  # reported once
    assert tied.shared.weight.requires_grad


@pytest.mark.parametrize(
    ("path", "bn", "error", "message"),
    [
        ("layer2.0.conv2", "fixed", ValueError, "bn must be one of"),
        ("layer2.0.conv2", None, TypeError, "bn must be one of"),
        ("layer2.9", "eval", ValueError, "No module or parameter matches"),
        (3, "eval", TypeError, "path must be"),
    ],
)
def test_bad_call_leaves_the_model_unchanged(
    resnet18: nn.Module, path: object, bn: object, error: type[Exception], message: str
) -> None:
    freeze(resnet18, "layer4", bn="frozen")
    before = requires_grad_map(resnet18)
    with pytest.raises(error, match=message):
        freeze_through(resnet18, path, bn=bn)  # type: ignore[arg-type]
    assert requires_grad_map(resnet18) == before
    assert isinstance(resnet18.layer4[0].bn1, FrozenBatchNorm)  # policy not released either


def test_frozen_policy_impossible_is_checked_before_any_change() -> None:
    model = nn.Sequential(
        nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2)
    )
    freeze(model, "2")
    before = requires_grad_map(model)
    with pytest.raises(ValueError, match="running statistics"):
        freeze_through(model, "1", bn="frozen")  # would first unfreeze "2", then fail
    assert requires_grad_map(model) == before


def test_tree_update_matches_an_independent_recount(resnet18: nn.Module) -> None:
    tree = ModuleTree(resnet18)
    tree.set_frozen("fc", True)
    changed = tree.freeze_through("layer2.0.conv2", bn="frozen")
    for node in tree:
        module = tree.module(node.path)
        if module is None:
            continue
        assert (node.total, node.trainable) == independent_counts(module), node.path
    assert {n.path for n in changed} >= {"", "layer2.0.conv2", "fc", "layer1.0.bn1"}
    assert tree.node("layer1.0.bn1").type_name == "FrozenBatchNorm"
    assert {n.path for n in changed}.isdisjoint({"layer2.0.bn2", "layer3", "layer4"})
