"""The learning-rate checks of ``audit_optimizer``: where per-group rates and the freeze disagree.

* groups that carry a multiplier key (timm's ``lr_scale``) while every group has the same
  ``lr``: layer-wise decay is silently off (only timm's scheduler applies ``lr_scale``);
* a trainable parameter in a group at ``lr`` 0 that still collects momentum or weight decay:
  it does not move while the rate is exactly 0, but the built-up momentum lands at once when a
  scheduler raises the rate (timm's rewrites ``lr`` from ``lr_scale`` every step);
* with a :class:`FreezeSpec`, parameters frozen outside it: something froze them as a side
  effect since the spec was taken (timm's ``layer_decay_no_opt_scale`` does).
"""

from __future__ import annotations

import torch
from torch import nn

from freeze_widgets.checks.findings import Finding
from freeze_widgets.checks.optimizer_state import carries_momentum, optimizer_state
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.freezing.targets import resolve_targets, select

__all__ = ["frozen_outside_spec", "lr_findings", "lr_scale_ignored", "zero_lr_still_moving"]

#: Keys libraries use for a per-group multiplier that their own scheduler applies.
SCALE_KEYS = ("lr_scale", "lr_mult", "lr_multiplier")


def lr_scale_ignored(optimizer: torch.optim.Optimizer) -> list[Finding]:
    """One finding when groups carry different multipliers but every ``lr`` is the same."""
    groups = optimizer.param_groups
    scales = {(k, float(g[k])) for g in groups for k in SCALE_KEYS if k in g}
    lrs = {float(g["lr"]) for g in groups}
    if len(groups) < 2 or len(scales) < 2 or len(lrs) != 1:
        return []
    key = sorted({k for k, _ in scales})[0]
    return [
        Finding(
            kind="lr_scale_ignored",
            path="",
            message=f"{len(groups)} param groups carry different {key!r} values but all have "
            f"lr={lrs.pop():g}: the per-group rates are not applied (only a scheduler that "
            f"reads {key!r}, such as timm's, applies them; torch's schedulers do not).",
            fix="set each group's lr yourself (group['lr'] = base_lr * group['lr_scale']), "
            "use timm's scheduler, or build the groups with freeze_widgets' param_groups",
        )
    ]


def zero_lr_still_moving(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> list[Finding]:
    """Trainable parameters at ``lr`` 0 whose group decays them or whose state has momentum."""
    findings: list[Finding] = []
    for gi, group in enumerate(optimizer.param_groups):
        if float(group["lr"]) != 0:
            continue
        decay = float(group.get("weight_decay", 0.0) or 0.0)
        momentum = float(group.get("momentum", 0.0) or 0.0)
        for pi, p in enumerate(group["params"]):
            if not p.requires_grad:
                continue  # audit_optimizer reports frozen parameters in the optimizer
            why = [f"weight_decay={decay:g}"] if decay else []
            if carries_momentum(optimizer_state(optimizer, p)):
                why.append("momentum state")
            elif momentum:
                why.append(f"momentum={momentum:g}")
            if why:
                path = names.get(id(p), f"param_groups[{gi}].params[{pi}]")
                findings.append(_zero_lr_finding(path, gi, why))
    return findings


def _zero_lr_finding(path: str, gi: int, why: list[str]) -> Finding:
    return Finding(
        kind="zero_lr_still_moving",
        path=path,
        message=f"Parameter {path!r} is in param group {gi} at lr 0 but still gets "
        f"{' and '.join(why)}: it is not frozen; momentum built up meanwhile moves it as soon "
        "as a scheduler raises the rate (timm's rewrites lr from lr_scale every step).",
        fix="freeze it (requires_grad False, out of the optimizer), or give its group "
        "weight_decay=0 and momentum 0 and clear optimizer.state[p] before raising the rate",
    )


def frozen_outside_spec(model: nn.Module, spec: FreezeSpec) -> list[Finding]:
    """Frozen parameters that ``spec`` does not freeze (a side effect of some other code)."""
    try:
        covered = {id(p) for p in select(resolve_targets(model, spec.frozen, exact=True)).params}
    except ValueError as exc:
        raise ValueError(f"the spec does not fit the model: {exc}") from None
    return [
        Finding(
            kind="frozen_outside_spec",
            path=name,
            message=f"Parameter {name!r} is frozen, but the spec does not freeze it: something "
            "froze it as a side effect (timm's layer_decay_no_opt_scale sets requires_grad=False "
            "on layers it drops from the optimizer).",
            fix="spec.apply(model) to restore the intended freeze, or take a new spec with "
            "FreezeSpec.from_model(model) if the freeze is intended",
        )
        for name, p in model.named_parameters()
        if not p.requires_grad and id(p) not in covered
    ]


def lr_findings(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> list[Finding]:
    """The learning-rate checks of one optimizer (the spec check runs once, in the audit)."""
    return lr_scale_ignored(optimizer) + zero_lr_still_moving(optimizer, names)
