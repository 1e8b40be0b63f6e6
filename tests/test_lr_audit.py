"""audit_optimizer's learning-rate checks, each on a real optimizer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeSpec, audit_optimizer
from freeze_widgets.training.param_groups import param_groups


def kinds(findings: list[object]) -> list[str]:
    return [f.kind for f in findings]  # type: ignore[attr-defined]


def two_layers() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))


def one_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.randn(4, 3)).square().sum().backward()
    optimizer.step()


@pytest.mark.slow
def test_timm_layer_decay_under_a_torch_scheduler_is_reported_and_timm_scheduler_clears_it() -> (
    None
):
    timm = pytest.importorskip("timm")
    from timm.optim import create_optimizer_v2
    from timm.scheduler import StepLRScheduler

    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=4
    )
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.75)
    torch.optim.lr_scheduler.StepLR(opt, step_size=10)  # torch's scheduler ignores lr_scale
    assert len({g["lr"] for g in opt.param_groups}) == 1  # independent: the rates really are equal
    findings = audit_optimizer(model, opt)
    assert kinds(findings) == ["lr_scale_ignored"]
    assert "'lr_scale'" in findings[0].message and "timm's" in findings[0].message

    StepLRScheduler(opt, decay_t=10).step(0)  # timm's scheduler applies lr_scale
    assert len({g["lr"] for g in opt.param_groups}) > 1
    assert audit_optimizer(model, opt) == []


@pytest.mark.slow
def test_side_effect_freeze_by_timm_no_opt_scale_is_reported_given_the_spec() -> None:
    timm = pytest.importorskip("timm")
    from timm.optim import create_optimizer_v2

    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=4
    )
    spec = FreezeSpec.from_model(model)  # nothing frozen yet
    opt = create_optimizer_v2(
        model, "adamw", lr=1e-3, layer_decay=0.75, layer_decay_no_opt_scale=0.5
    )
    side_frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert side_frozen  # timm set requires_grad=False on the layers it left out
    outside = [f for f in audit_optimizer(model, opt, spec=spec) if f.kind == "frozen_outside_spec"]
    assert {f.path for f in outside} == side_frozen
    assert not any(f.kind == "frozen_outside_spec" for f in audit_optimizer(model, opt))
    spec.apply(model)  # the way out the finding names: the intended freeze is back
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_as_the_spec_says_is_not_reported() -> None:
    model = two_layers()
    model[0].weight.requires_grad_(False)
    spec = FreezeSpec.from_model(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    assert audit_optimizer(model, opt, spec=spec) == []
    model[1].bias.requires_grad_(False)  # a side effect after the spec was taken
    found = audit_optimizer(model, opt, spec=spec)
    assert ("frozen_in_optimizer", "1.bias") in [(f.kind, f.path) for f in found]
    assert ("frozen_outside_spec", "1.bias") in [(f.kind, f.path) for f in found]
    with pytest.raises(TypeError, match="spec must be a FreezeSpec"):
        audit_optimizer(model, opt, spec="1.bias")  # type: ignore[arg-type]


def test_zero_lr_with_momentum_is_reported_and_really_moves_when_raised() -> None:
    model = two_layers()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.0},
            {"params": model[1].parameters(), "lr": 0.1},
        ],
        lr=0.1,
        momentum=0.9,
    )
    before = model[0].weight.detach().clone()
    one_step(model, opt)
    assert torch.equal(model[0].weight, before)  # at lr 0 it did not move ...
    findings = audit_optimizer(model, opt)
    assert [(f.kind, f.path) for f in findings] == [
        ("zero_lr_still_moving", "0.weight"),
        ("zero_lr_still_moving", "0.bias"),
    ]
    assert "momentum state" in findings[0].message
    # ... but the momentum it collected lands when the rate is raised, with a zero gradient.
    opt.param_groups[0]["lr"] = 0.1
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert not torch.equal(model[0].weight, before)


def test_zero_lr_with_weight_decay_reported_and_clean_groups_are_not() -> None:
    model = two_layers()
    decayed = torch.optim.AdamW(
        [{"params": model[0].parameters(), "lr": 0.0}, {"params": model[1].parameters()}],
        lr=1e-3,
        weight_decay=0.01,
    )
    assert kinds(audit_optimizer(model, decayed)) == ["zero_lr_still_moving"] * 2
    # param_groups gives a rate-0 group no decay, and plain SGD keeps no momentum: clean.
    groups = param_groups(model, 1e-3, lr_mult={"0": 0.0}, weight_decay=0.01)
    assert audit_optimizer(model, torch.optim.SGD(groups, lr=1e-3)) == []
