"""``audit_optimizer``: check optimizers against a model's current freeze before training.

It finds the three ways optimizers and a freeze disagree (docs/design.md, traps 2 and 3):
frozen parameters still handed to an optimizer, trainable parameters none of them received (an
unfreeze without ``add_param_group``), and a parameter listed twice (in two groups, or in two
optimizers). The momentum rule (:mod:`freeze_widgets.checks.optimizer_state`) is the one
:class:`~freeze_widgets.verify.guard.FreezeGuard` uses to name a cause, so the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from freeze_widgets.base.checks import require_module
from freeze_widgets.checks.findings import Finding
from freeze_widgets.checks.lr_audit import frozen_outside_spec, lr_findings
from freeze_widgets.checks.optimizer_state import carries_momentum, optimizer_list, optimizer_state
from freeze_widgets.freezing.spec import FreezeSpec

__all__ = ["audit_optimizer"]


def _frozen_in_optimizer(
    path: str, p: nn.Parameter, group: Mapping[str, object], state: Mapping[str, Any]
) -> Finding:
    risks = []
    if carries_momentum(state):
        risks.append("carries momentum state")
    decay = group.get("weight_decay", 0.0)
    if isinstance(decay, (int, float)) and decay != 0:
        risks.append(f"has weight_decay={decay:g}")
    if p.grad is not None:
        risks.append("has a .grad")
    if risks:
        danger = (
            f"it {', '.join(risks)}, so the next step can move it whenever its .grad is not None"
        )
    else:
        danger = "harmless while its .grad stays None, but it will move if a gradient appears"
    return Finding(
        kind="frozen_in_optimizer",
        path=path,
        message=f"Frozen parameter {path!r} is still in the optimizer; {danger}.",
        fix="build the optimizer from [p for p in model.parameters() if p.requires_grad], "
        "or set p.grad = None and drop optimizer.state[p]",
    )


def _twice(path: str, first: str, again: str) -> Finding:
    return Finding(
        kind="param_in_two_groups",
        path=path,
        message=f"Parameter {path!r} is in {first} and again in {again}; each step would "
        "update it twice.",
        fix="list every parameter in exactly one param group of one optimizer",
    )


def audit_optimizer(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Iterable[torch.optim.Optimizer],
    *,
    spec: FreezeSpec | None = None,
) -> list[Finding]:
    """Compare the optimizers' parameter groups with ``model``'s current freeze.

    Several optimizers (a GAN, Lightning's manual optimisation) are audited together: a
    trainable parameter held by any of them is in an optimizer. Nothing is changed. Parameters
    are named by ``model.named_parameters()``; one not in the model by its group and index.

    Returns:
        Findings of kind ``"frozen_in_optimizer"`` (with whether it carries momentum, weight
        decay or a gradient), ``"trainable_not_in_optimizer"`` and ``"param_in_two_groups"``
        (two groups, or two optimizers); an empty list when the optimizers hold exactly the
        trainable parameters, once each. The learning-rate checks (:mod:`.lr_audit`) add
        ``"lr_scale_ignored"``, ``"zero_lr_still_moving"`` and, given ``spec``,
        ``"frozen_outside_spec"``.

    Raises:
        TypeError: ``model`` is not a module, ``optimizer`` not an optimizer or a list of them,
            or ``spec`` not a ``FreezeSpec``.
        ValueError: a ``spec`` path that is not in ``model``.
    """
    require_module(model)
    optimizers = optimizer_list(optimizer)
    if spec is not None and not isinstance(spec, FreezeSpec):
        raise TypeError(f"spec must be a FreezeSpec or None; got {type(spec).__name__}")
    names = {id(p): n for n, p in model.named_parameters()}
    findings: list[Finding] = []
    where: dict[int, str] = {}
    for oi, opt in enumerate(optimizers):
        label = f"optimizer {oi} " if len(optimizers) > 1 else ""
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                path = names.get(id(p), f"param_groups[{gi}].params[{pi}]")
                here = f"{label}param group {gi}"
                if id(p) in where:
                    findings.append(_twice(path, where[id(p)], here))
                    continue
                where[id(p)] = here
                if not p.requires_grad:
                    findings.append(_frozen_in_optimizer(path, p, group, optimizer_state(opt, p)))
    for path, p in model.named_parameters():
        if p.requires_grad and id(p) not in where:
            findings.append(
                Finding(
                    kind="trainable_not_in_optimizer",
                    path=path,
                    message=f"Trainable parameter {path!r} is not in any optimizer, so it "
                    "never updates (unfrozen after the optimizer was built?).",
                    fix="optimizer.add_param_group({'params': [...the newly unfrozen "
                    "parameters...]}), or build the optimizer after freezing",
                )
            )
    for opt in optimizers:
        findings += lr_findings(opt, names)
    if spec is not None:
        findings += frozen_outside_spec(model, spec)
    return findings
