"""``unfreeze_and_add_param_group``: Lightning's unfreeze mid-training, for users' own loops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from freeze_widgets.base.checks import require_eager_module
from freeze_widgets.checks.audit import audit_optimizer
from freeze_widgets.checks.findings import Finding
from freeze_widgets.freezing.change import FreezeChange
from freeze_widgets.freezing.rollback import all_or_nothing
from freeze_widgets.freezing.targets import apply_freeze, resolve_targets, select
from freeze_widgets.training.options import require_positive_number
from freeze_widgets.training.schedule import add_param_group

__all__ = ["ParamGroupAdded", "unfreeze_and_add_param_group"]


@dataclass(frozen=True)
class ParamGroupAdded:
    """What :func:`unfreeze_and_add_param_group` did, and the audit of the optimizer after it."""

    change: FreezeChange
    lr: float
    added: int  # parameters in the new group (0: nothing new, no group added)
    findings: list[Finding]


def unfreeze_and_add_param_group(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    targets: object,
    lr: float | None = None,
    initial_denom_lr: float = 10.0,
    train_bn: bool = True,
) -> ParamGroupAdded:
    """Unfreeze ``targets`` and give their parameters to ``optimizer`` as a new group.

    Lightning's ``BaseFinetuning.unfreeze_and_add_param_group`` for a loop of your own: the lr is
    ``lr``, or the first group's lr divided by ``initial_denom_lr``. ``targets`` are paths,
    patterns, module objects, or (nested) lists of them. Two choices differ from Lightning on
    purpose: with ``train_bn=False`` BatchNorm layers under the targets stay frozen (Lightning
    makes them trainable but leaves them out of the optimizer), and parameters already in the
    optimizer are found by identity (Lightning compares values, so an equal-valued tensor,
    e.g. a zero-initialised bias, is wrongly left out). Then :func:`audit_optimizer` runs.

    Raises:
        TypeError / ValueError: a bad target, optimizer, lr or ``initial_denom_lr``; the model
            and optimizer are unchanged.
    """
    require_eager_module(model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
        )
    if not isinstance(train_bn, bool):
        raise TypeError(f"train_bn must be True or False; got {type(train_bn).__name__}")
    denom = require_positive_number(initial_denom_lr, "initial_denom_lr")
    rate = (
        optimizer.param_groups[0]["lr"] / denom if lr is None else require_positive_number(lr, "lr")
    )
    items: list[Any] = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    chosen = select(resolve_targets(model, items))
    bn_ids = {id(p) for m in chosen.bns.values() for p in m.parameters()}
    keep = [i for i, p in enumerate(chosen.params) if train_bn or id(p) not in bn_ids]
    params = [chosen.params[i] for i in keep]
    names = [chosen.names[i] for i in keep]
    bns = chosen.bns if train_bn else {}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    new = [p for p in params if id(p) not in held]
    groups_before = len(optimizer.param_groups)
    with all_or_nothing(model, params, None):
        try:
            change = apply_freeze(model, params, names, bns, frozen=False)
            if new:
                add_param_group(model, optimizer, new, rate)
        except BaseException:
            del optimizer.param_groups[groups_before:]
            raise
    return ParamGroupAdded(
        change, rate, sum(p.numel() for p in new), audit_optimizer(model, optimizer)
    )
