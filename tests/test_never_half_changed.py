"""Correctness on unusual models, and "every public call succeeds or leaves the model as it was"."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from freeze_widgets import (
    FreezeSpec,
    FrozenBatchNorm,
    ModuleTree,
    count_parameters,
    freeze,
    freeze_through,
    freeze_to,
    unfreeze,
)
from freeze_widgets.freezing.bn import (
    bn_state,
    iter_batchnorms,
    set_bn_policy,
)
from freeze_widgets.freezing.rollback import all_or_nothing
from freeze_widgets.freezing.spec import frozen_paths
from freeze_widgets.freezing.targets import (
    Selection,
    apply_freeze,
    resolve_targets,
    retarget,
    select,
    top_level_groups,
)

from .conftest import independent_counts, make_seq_bn, model_fingerprint, requires_grad_map


def _glob_named() -> nn.Module:
    model = nn.Module()
    model.d = nn.ModuleDict(
        {
            "r[1]": nn.Linear(2, 2),
            "r1": nn.Linear(2, 2),
            "ab?": nn.Linear(2, 2),
            "abc": nn.Linear(2, 2),
        }
    )
    return model


def _frozen(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


# ---------------------------------------------------------------------- glob characters in names


def test_exact_path_with_glob_characters_wins_over_the_pattern() -> None:
    model = _glob_named()
    freeze(model, "d.r[1]")
    assert _frozen(model) == {"d.r[1].weight", "d.r[1].bias"}
    unfreeze(model)
    freeze(model, "d.ab?")
    assert _frozen(model) == {"d.ab?.weight", "d.ab?.bias"}  # not d.abc


def test_spec_paths_are_exact_even_when_they_are_valid_globs_of_other_names() -> None:
    model = _glob_named()
    freeze(model, "d.r[1]")
    spec = FreezeSpec.from_json(FreezeSpec.from_model(model).to_json())
    assert spec.frozen == ("d.r[1]",)
    fresh = _glob_named()
    spec.apply(fresh)
    assert _frozen(fresh) == {"d.r[1].weight", "d.r[1].bias"}
    # A spec path that exists only as a pattern of other names is an error, not a pattern.
    other = nn.Module()
    other.d = nn.ModuleDict({"r1": nn.Linear(2, 2)})
    before = model_fingerprint(other)
    with pytest.raises(ValueError, match=r"d\.r\[1\]"):
        spec.apply(other)
    assert model_fingerprint(other) == before


# ---------------------------------------------------------------------- shared modules


def test_a_batchnorm_under_two_names_is_swapped_under_both() -> None:
    bn = nn.BatchNorm1d(4)
    model = nn.Module()
    model.a = nn.Sequential(nn.Linear(4, 4), bn)
    model.b = nn.Sequential(bn)
    change = freeze(model, bn="frozen")
    assert isinstance(model.a[1], FrozenBatchNorm)
    assert model.a[1] is model.b[0]
    assert set(change.replaced) == {"a.1", "b.0"}
    model.train()
    stats = model.b[0].running_mean.clone()
    model.b(torch.randn(8, 4) + 3)
    assert torch.equal(model.b[0].running_mean, stats)
    unfreeze(model)
    assert model.a[1] is bn and model.b[0] is bn


def test_module_registered_twice_in_one_parent_has_a_node_and_is_counted_once() -> None:
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    tree = ModuleTree(model)
    assert "2" in tree and tree.node("2").total == 12
    assert tree.counts.total == independent_counts(model)[0] == 12
    tree.set_frozen("2", True)
    assert tree.node("0").state == "frozen" and tree.root.state == "frozen"
    assert tree.counts.trainable == independent_counts(model)[1] == 0


def test_tree_swaps_a_shared_batchnorm_under_both_names_and_counts_it_once() -> None:
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(4, 4), bn, bn)  # twice in one parent
    tree = ModuleTree(model)
    assert tree.counts.total == independent_counts(model)[0] == 28
    touched = {n.path for n in tree.set_frozen("1", True, bn="frozen")}
    assert {"1", "2"} <= touched
    assert tree.node("1").type_name == tree.node("2").type_name == "FrozenBatchNorm"
    assert model[1] is model[2] and isinstance(model[1], FrozenBatchNorm)
    assert tree.node("2").state == "frozen"
    assert FreezeSpec.from_model(model).bn == "frozen"
    tree.set_frozen("2", False)
    assert model[1] is bn and model[2] is bn
    assert tree.node("1").type_name == "BatchNorm1d" and tree.node("1").state == "trainable"
    assert (tree.counts.total, tree.counts.trainable) == independent_counts(model)


# ---------------------------------------------------------------------- BatchNorm subclasses


class _BnWithAct(nn.BatchNorm2d):
    """A user's BatchNorm subclass with behaviour of its own (like timm's BatchNormAct2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x)) * 2


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: nn.BatchNorm1d(4), (5, 4)),
        (lambda: nn.BatchNorm2d(4), (5, 4, 3, 3)),
        (lambda: nn.BatchNorm3d(4), (5, 4, 2, 2, 2)),
        (lambda: nn.SyncBatchNorm(4), (5, 4, 3, 3)),
        (lambda: _BnWithAct(4), (5, 4, 3, 3)),
    ],
)
def test_frozen_policy_keeps_every_batchnorm_eval_output(
    make: Callable[[], nn.Module], shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(make())
    model[0].running_mean.uniform_(-1, 1)
    model[0].running_var.uniform_(0.5, 2)
    nn.init.uniform_(model[0].weight, -2, 2)
    x = torch.randn(shape)
    want = model.eval()(x)
    freeze(model, bn="frozen")
    assert bn_state(model[0]) == "frozen"
    assert torch.equal(model.train()(x), want)  # stays in eval through model.train()
    assert type(model[0]) is (type(make()) if isinstance(make(), _BnWithAct) else FrozenBatchNorm)


def test_lazy_batchnorm_asks_for_a_forward_first_then_freezes() -> None:
    model = nn.Sequential(nn.LazyBatchNorm1d())
    before = model_fingerprint(model)
    with pytest.raises(ValueError, match="forward pass"):
        freeze(model, bn="frozen")
    assert model_fingerprint(model) == before
    model(torch.randn(6, 3))  # materialises: the layer becomes a BatchNorm1d
    x = torch.randn(6, 3)
    want = model.eval()(x)
    freeze(model, bn="frozen")
    assert isinstance(model[0], FrozenBatchNorm)
    assert torch.equal(model.train()(x), want)


# ---------------------------------------------------------------------- FreezeSpec


@pytest.mark.parametrize("policy", ["train", "eval", "frozen"])
def test_from_model_records_the_policy_in_force(policy: str) -> None:
    model = make_seq_bn()
    freeze(model, "0", "1", bn=policy)
    assert FreezeSpec.from_model(model).bn == policy
    fresh = make_seq_bn()
    FreezeSpec.from_model(model).apply(fresh)
    assert bn_state(fresh[1]) == policy


def test_from_model_with_mixed_policies_names_them_and_the_way_out() -> None:
    model = nn.Sequential(nn.BatchNorm1d(2), nn.BatchNorm1d(2), nn.Linear(2, 2))
    freeze(model, "0", bn="train")
    freeze(model, "1", bn="eval")
    with pytest.raises(ValueError, match=r"different policies.*set_bn_policy"):
        FreezeSpec.from_model(model)
    assert FreezeSpec.from_model(model, bn="eval").bn == "eval"


def test_to_code_output_pickles_the_model() -> None:
    model = make_seq_bn()
    freeze(model, "0", "1")
    code = FreezeSpec.from_model(model).to_code()
    fresh = make_seq_bn()
    script = types.ModuleType("user_script")  # the user's notebook or script
    sys.modules["user_script"] = script
    try:
        script.model = fresh  # type: ignore[attr-defined]
        exec(code, script.__dict__)
        fresh.train()
        assert not fresh[1].training
        buffer = io.BytesIO()
        torch.save(fresh, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
    finally:
        del sys.modules["user_script"]
    assert requires_grad_map(loaded) == requires_grad_map(model)
    assert not loaded.train()[1].training


# ---------------------------------------------------------------------- TorchScript


def test_scripted_module_gets_a_type_error_saying_freeze_before_scripting() -> None:
    model = torch.jit.script(make_seq_bn())
    calls: list[Callable[[], Any]] = [
        lambda: freeze(model),
        lambda: unfreeze(model, "0"),
        lambda: freeze_to(model, 1),
        lambda: freeze_through(model, "0"),
        lambda: FreezeSpec(("0",)).apply(model),
        lambda: set_bn_policy(model, "frozen"),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=r"before torch\.jit\.script"):
            call()
    assert all(p.requires_grad for p in model.parameters())


def test_freezing_before_scripting_is_kept() -> None:
    model = make_seq_bn()
    freeze(model, "0")
    scripted = torch.jit.script(model)
    assert requires_grad_map(scripted) == requires_grad_map(model)


# ---------------------------------------------------------------------- never half-changed


def _failing_calls(model: nn.Module) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("freeze_to bad bn", lambda: freeze_to(model, 2, bn="evl")),
        ("freeze bad bn", lambda: freeze(model, "0", bn="evl")),
        ("freeze unknown", lambda: freeze(model, "0", "nope")),
        ("unfreeze unknown", lambda: unfreeze(model, "0", "nope")),
        ("spec no stats", lambda: FreezeSpec(("",), "frozen").apply(model)),
        ("spec unknown", lambda: FreezeSpec(("0", "nope")).apply(model)),
        ("through no stats", lambda: freeze_through(model, "2", bn="frozen")),
        ("through unknown", lambda: freeze_through(model, "nope", bn="frozen")),
        ("tree bad bn", lambda: ModuleTree(model).set_frozen("0", True, bn="evl")),
        ("tree no stats", lambda: ModuleTree(model).set_frozen("", True, bn="frozen")),
        ("set_bn_policy bad", lambda: set_bn_policy(model, "evl")),
    ]


def _model_with_a_statless_bn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 4),
        nn.BatchNorm1d(4),
        nn.BatchNorm1d(4, track_running_stats=False),
        nn.Linear(4, 2),
    )
    freeze(model, "0", bn="eval")  # a non-trivial starting state
    model[0].weight.grad = torch.ones(4, 4)
    return model


def test_every_failing_call_leaves_the_model_exactly_as_it_was() -> None:
    model = _model_with_a_statless_bn()
    for label, call in _failing_calls(model):
        before = model_fingerprint(model)
        with pytest.raises((TypeError, ValueError)):
            call()
        assert model_fingerprint(model) == before, label
        assert model[0].weight.grad is not None and model[0].weight.grad.sum() == 16, label


def test_a_failure_part_way_is_rolled_back() -> None:
    """The second line of defence: a change that fails after touching the model is undone."""
    model = make_seq_bn()
    freeze(model, "1", bn="eval")
    before = model_fingerprint(model)

    def change_then_fail() -> None:
        with all_or_nothing(model):
            unfreeze(model)
            freeze(model, bn="frozen")
            model[3] = nn.Identity()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        change_then_fail()
    assert model_fingerprint(model) == before
    assert bn_state(model[1]) == "eval"


@pytest.mark.parametrize("policy", ["eval", "frozen"])
@pytest.mark.parametrize("entry", ["freeze", "freeze_to", "tree"])
def test_a_failure_inside_the_worker_is_rolled_back(
    policy: str, entry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The BatchNorm step fails after parameters flipped and layers changed: all undone."""
    from freeze_widgets.freezing import targets

    real = targets.apply_bn_policy

    def fails_after_changing(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise RuntimeError("boom")

    model = make_seq_bn()
    freeze(model, "3")
    model[0].weight.grad = torch.ones(32, 32)
    tree = ModuleTree(model)
    before = model_fingerprint(model)
    monkeypatch.setattr(targets, "apply_bn_policy", fails_after_changing)
    calls = {
        "freeze": lambda: freeze(model, bn=policy),
        "freeze_to": lambda: freeze_to(model, 2, bn=policy),
        "tree": lambda: tree.set_frozen("", True, bn=policy),
    }
    with pytest.raises(RuntimeError, match="boom"):
        calls[entry]()
    assert model_fingerprint(model) == before
    assert model[0].weight.grad is not None


def _model_calls(bad: Any) -> list[tuple[str, Callable[[], Any]]]:
    """(argument the message must name, call) for each public function taking a model."""
    return [
        ("model", lambda: freeze(bad)),
        ("model", lambda: unfreeze(bad)),
        ("model", lambda: freeze_to(bad, 1)),
        ("model", lambda: freeze_through(bad, "0")),
        ("model", lambda: top_level_groups(bad)),
        ("model", lambda: count_parameters(bad)),
        ("model", lambda: ModuleTree(bad)),
        ("model", lambda: FreezeSpec.from_model(bad)),
        ("model", lambda: FreezeSpec(("0",)).apply(bad)),
        ("model", lambda: frozen_paths(bad)),
        ("model", lambda: set_bn_policy(bad, "eval")),
        ("model", lambda: list(iter_batchnorms(bad))),
        ("model", lambda: resolve_targets(bad, ["0"])),
        ("model", lambda: apply_freeze(bad, [], [], {}, frozen=True)),
        ("model", lambda: retarget(bad, Selection([], [], {}), Selection([], [], {}), "eval")),
    ]


def _argument_calls(bad: Any) -> list[tuple[str, Callable[[], Any]]]:
    """(argument the message must name, call) for every other argument."""
    m = make_seq_bn()
    return [
        ("targets", lambda: freeze(m, bad)),
        ("targets", lambda: unfreeze(m, "0", bad)),
        ("bn", lambda: freeze(m, "0", bn=bad)),
        ("bn", lambda: freeze_to(m, 1, bn=bad)),
        ("bn", lambda: freeze_through(m, "0", bn=bad)),
        ("n", lambda: freeze_to(m, bad)),
        ("path", lambda: freeze_through(m, bad)),
        ("frozen", lambda: FreezeSpec(bad)),
        ("bn", lambda: FreezeSpec(("0",), bad)),
        ("text", lambda: FreezeSpec.from_json(bad)),
        ("bn", lambda: FreezeSpec.from_model(m, bn=bad or 2.5)),  # None there: read it off
        ("path", lambda: ModuleTree(m).node(bad)),
        ("frozen", lambda: ModuleTree(m).set_frozen("0", bad)),
        ("bn", lambda: ModuleTree(m).set_frozen("0", True, bn=bad)),
        ("bn", lambda: ModuleTree(m).set_bn_policy(bad)),
        ("bn", lambda: set_bn_policy(m, bad)),
        ("targets", lambda: resolve_targets(m, bad)),
        ("resolved", lambda: select(bad)),
        ("train", lambda: retarget(m, bad, select(resolve_targets(m, ["0"])), "eval")),
        ("frozen", lambda: apply_freeze(m, [], [], {}, frozen=bad)),
        ("params", lambda: apply_freeze(m, [bad], ["0"], {}, frozen=True)),
        ("names", lambda: apply_freeze(m, [m[0].weight], [bad], {}, frozen=True)),
        ("bns", lambda: apply_freeze(m, [], [], bad, frozen=True)),
        ("path", lambda: ModuleTree(m).subtree(bad)),
        ("path", lambda: ModuleTree(m).freeze_through(bad)),
    ]


@pytest.mark.parametrize("bad", [None, 3, "model"], ids=repr)
def test_a_wrong_model_raises_a_type_error_naming_the_argument(bad: Any) -> None:
    for argument, call in _model_calls(bad):
        with pytest.raises(TypeError, match=f"^{argument} must be"):
            call()


@pytest.mark.parametrize("bad", [None, 2.5, object()], ids=repr)
def test_a_wrong_argument_raises_a_type_error_naming_it(bad: Any) -> None:
    for argument, call in _argument_calls(bad):
        with pytest.raises((TypeError, ValueError), match=argument) as info:
            call()
        # FreezeSpec.from_model reports a bad bn as a ValueError naming where it came from.
        assert info.type is TypeError or "from_model" in str(info.value), argument
