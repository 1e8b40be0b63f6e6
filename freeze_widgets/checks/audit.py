"""``audit_optimizer``: check an optimizer against a model's current freeze before training.

It finds the three ways an optimizer and a freeze disagree (docs/design.md, traps 2 and 3):
frozen parameters still handed to the optimizer, trainable parameters it never received (an
unfreeze without ``add_param_group``), and a parameter listed in two groups.
"""

from __future__ import annotations

import torch
from torch import nn

from freeze_widgets.base.checks import require_module
from freeze_widgets.checks.findings import Finding
from freeze_widgets.checks.lr_audit import lr_findings
from freeze_widgets.freezing.spec import FreezeSpec

__all__ = ["audit_optimizer"]

# First-moment state moves a parameter even with a zero gradient (see guard._MOMENTUM_KEYS).
_MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")


def _frozen_in_optimizer(
    path: str, p: nn.Parameter, group: dict[str, object], state: dict[str, object]
) -> Finding:
    risks = []
    if any(isinstance(state.get(k), torch.Tensor) for k in _MOMENTUM_KEYS):
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


def audit_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, *, spec: FreezeSpec | None = None
) -> list[Finding]:
    """Compare ``optimizer``'s parameter groups with ``model``'s current freeze.

    Nothing is changed. Parameters are named by ``model.named_parameters()``; one not in the
    model is named by its group and index.

    Returns:
        Findings of kind ``"frozen_in_optimizer"`` (with whether it carries state, weight decay
        or a gradient), ``"trainable_not_in_optimizer"`` and ``"param_in_two_groups"``; an empty
        list when the optimizer holds exactly the trainable parameters, once each. The
        learning-rate checks (:mod:`.lr_audit`) add ``"lr_scale_ignored"``,
        ``"zero_lr_still_moving"`` and, given ``spec``, ``"frozen_outside_spec"``.

    Raises:
        TypeError: ``model`` is not a module, ``optimizer`` not a ``torch.optim.Optimizer`` or
            ``spec`` not a ``FreezeSpec``.
        ValueError: a ``spec`` path that is not in ``model``.
    """
    require_module(model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
        )
    if spec is not None and not isinstance(spec, FreezeSpec):
        raise TypeError(f"spec must be a FreezeSpec or None; got {type(spec).__name__}")
    names = {id(p): n for n, p in model.named_parameters()}
    findings: list[Finding] = []
    first_group: dict[int, int] = {}
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            path = names.get(id(p), f"param_groups[{gi}].params[{pi}]")
            if id(p) in first_group:
                findings.append(
                    Finding(
                        kind="param_in_two_groups",
                        path=path,
                        message=f"Parameter {path!r} is in param group {first_group[id(p)]} "
                        f"and again in group {gi}; each step would update it twice.",
                        fix="list every parameter in exactly one param group",
                    )
                )
                continue
            first_group[id(p)] = gi
            if not p.requires_grad:
                findings.append(_frozen_in_optimizer(path, p, group, optimizer.state.get(p, {})))
    for path, p in model.named_parameters():
        if p.requires_grad and id(p) not in first_group:
            findings.append(
                Finding(
                    kind="trainable_not_in_optimizer",
                    path=path,
                    message=f"Trainable parameter {path!r} is not in the optimizer, so it never "
                    "updates (unfrozen after the optimizer was built?).",
                    fix="optimizer.add_param_group({'params': [...the newly unfrozen "
                    "parameters...]}), or build the optimizer after freezing",
                )
            )
    findings += lr_findings(model, optimizer, names, momentum_keys=_MOMENTUM_KEYS, spec=spec)
    return findings
