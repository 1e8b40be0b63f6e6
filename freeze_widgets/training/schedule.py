"""Gradual unfreezing: which groups to release at which epoch, and releasing one mid-training.

An optimizer built before unfreezing never updates the new parameters, so
:func:`unfreeze_group` adds them as a param group of the running optimizer
(docs/design.md, trap 3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from freeze_widgets.freezing.targets import top_level_groups, unfreeze
from freeze_widgets.training.param_groups import even_mults

__all__ = [
    "HEAD_THEN_ALL",
    "HEAD_THEN_ALL_SPREAD",
    "ULMFIT_LR_FACTOR",
    "describe_rates",
    "group_params",
    "resolve_schedule",
    "schedule_rates",
    "unfreeze_group",
]

#: Each gradually unfrozen group trains at ``lr / ULMFIT_LR_FACTOR**k`` (k = 1, 2, ...), the
#: discriminative factor of ULMFiT (Howard & Ruder, 2018): layers further from the head get
#: smaller steps.
ULMFIT_LR_FACTOR = 2.6

#: fastai's ``fine_tune``: train the head (epoch 1), then halve the rate and unfreeze everything
#: with rates spread geometrically over the top-level groups from ``lr / 2 / spread`` (first
#: group) to ``lr / 2`` (the last), fastai's ``slice(base_lr / lr_mult, base_lr)``.
HEAD_THEN_ALL = "head-then-all"
HEAD_THEN_ALL_SPREAD = 100.0


def resolve_schedule(
    model: nn.Module, schedule: Any, epochs: int, *, new_head: str | None = None
) -> dict[int, list[str]]:
    """Map 1-based epoch -> groups to unfreeze at its start.

    Args:
        model: The model the group names refer to.
        schedule: None, ``"gradual"`` (one more frozen top-level group per epoch, from the end
            of the model backwards), a list (entry i at epoch i + 2) or a dict {epoch: names}.
        epochs: Epochs the run will have (bounds the ``"gradual"`` schedule).
        new_head: Path of a head not replaced yet that will be a fresh trainable layer: the
            group holding it is not frozen, as after :func:`~.head.replace_head`.

    Raises:
        TypeError: ``schedule`` has none of these forms.
        ValueError: a name not in the model, or an epoch below 1.
    """
    if schedule is None:
        return {}
    groups = top_level_groups(model)
    if schedule == HEAD_THEN_ALL:
        if epochs < 2:
            raise ValueError(
                f"unfreeze_schedule={HEAD_THEN_ALL!r} needs at least 2 epochs (epoch 1 trains "
                "the head, the rest unfreezes at epoch 2); pass epochs=2 or more, or steps= "
                "covering two passes over the data"
            )
        frozen = [g for g in groups if _is_frozen_group(model, g, new_head)]
        if not frozen:
            raise ValueError(
                f"unfreeze_schedule={HEAD_THEN_ALL!r} unfreezes the frozen body at epoch 2, but "
                "no top-level group is frozen; freeze the body first: freeze_to(model, -1)"
            )
        return {2: frozen}
    if schedule == "gradual":
        frozen = [g for g in groups if _is_frozen_group(model, g, new_head)]
        # From the top of the model (its end) backwards, one group per epoch after the first.
        order = list(reversed(frozen))
        return {e: [order[e - 2]] for e in range(2, epochs + 1) if e - 2 < len(order)}
    if isinstance(schedule, dict):
        items = {int(k): v for k, v in schedule.items()}
    elif isinstance(schedule, (list, tuple)):
        items = {i + 2: v for i, v in enumerate(schedule)}
    else:
        raise TypeError(
            "unfreeze_schedule must be None, 'gradual', 'head-then-all', a list of group names "
            "(entry i is "
            "unfrozen at the start of epoch i + 2) or a dict {epoch: names}; "
            f"got {schedule!r}"
        )
    out: dict[int, list[str]] = {}
    for epoch, value in items.items():
        names = [value] if isinstance(value, str) else list(value or [])
        for name in names:
            _check_group_name(model, name, groups)
        if epoch < 1:
            raise ValueError(f"unfreeze_schedule epochs are 1-based; got {epoch}")
        if names:
            out[epoch] = names
    return out


def _is_frozen_group(model: nn.Module, group: str, new_head: str | None) -> bool:
    """Every parameter of ``group`` is frozen and it does not hold a head about to be replaced."""
    if new_head is not None and (new_head == group or new_head.startswith(f"{group}.")):
        return False
    return not any(p.requires_grad for p in group_params(model, group))


def _check_group_name(model: nn.Module, name: str, groups: list[str]) -> None:
    """Raise a ValueError unless ``name`` is a submodule or a parameter ("" is the model)."""
    if not name:
        return
    try:
        model.get_submodule(name)
    except AttributeError:
        try:
            model.get_parameter(name)
        except AttributeError:
            raise ValueError(
                f"unfreeze_schedule names {name!r}, which is not in the model; "
                f"top-level groups are: {', '.join(groups)}"
            ) from None


def group_params(model: nn.Module, group: str) -> list[nn.Parameter]:
    """The parameters of submodule ``group``, or the single parameter of that name."""
    try:
        return list(model.get_submodule(group).parameters())
    except AttributeError:
        return [model.get_parameter(group)]


def unfreeze_group(
    model: nn.Module, optimizer: torch.optim.Optimizer, group: str, lr: float
) -> int:
    """Unfreeze ``group`` and add its parameters new to ``optimizer`` as one param group.

    Parameters already in the optimizer (tied ones, or a group released twice) are not added
    again. A model in training mode puts the released BatchNorm layers back in training mode.

    Returns:
        The number of parameter tensors added to the optimizer.
    """
    unfreeze(model, group)
    if model.training:
        model.train()  # the released BatchNorm layers leave the eval mode their policy kept
    known = {id(p) for g in optimizer.param_groups for p in g["params"]}
    trainable = [p for p in group_params(model, group) if p.requires_grad]
    new = [p for p in dict.fromkeys(trainable) if id(p) not in known]
    if new:
        add_param_group(model, optimizer, new, lr)
    return len(new)


def add_param_group(
    model: nn.Module, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], lr: float
) -> None:
    """``optimizer.add_param_group`` for ``params`` at ``lr``, named when the others are."""
    added: dict[str, Any] = {"params": params, "lr": lr}
    if all("param_names" in g for g in optimizer.param_groups):
        # torch refuses a group without names beside named ones (param_groups names them)
        names = {id(p): n for n, p in model.named_parameters()}
        added["param_names"] = [names.get(id(p), "") for p in params]
    optimizer.add_param_group(added)


def schedule_rates(
    model: nn.Module, schedule: Any, resolved: dict[int, list[str]], lr: float
) -> dict[int, list[tuple[str, float]]]:
    """Epoch -> (group, learning rate) for each group the schedule releases.

    ``"head-then-all"`` uses fastai's spread (:data:`HEAD_THEN_ALL_SPREAD`) over the top-level
    groups; every other schedule gives the k-th released group ``lr / 2.6**k`` (ULMFiT).
    """
    out: dict[int, list[tuple[str, float]]] = {}
    if schedule == HEAD_THEN_ALL:
        groups = top_level_groups(model)
        top = lr / 2
        rates = even_mults(top / HEAD_THEN_ALL_SPREAD, top, len(groups))
        spread = dict(zip(groups, rates, strict=True))
        for epoch, names in sorted(resolved.items()):
            out[epoch] = [(g, spread.get(g, top)) for g in names]
        return out
    k = 0
    for epoch, names in sorted(resolved.items()):
        for g in names:
            k += 1
            out.setdefault(epoch, []).append((g, lr / ULMFIT_LR_FACTOR**k))
    return out


def describe_rates(schedule: Any, rates: dict[int, list[tuple[str, float]]], lr: float) -> str:
    """The learning rates a run will use, one line per epoch that changes them (shown first)."""
    lines = [f"epoch 1: the trainable groups at lr {lr:.3g}"]
    for epoch, released in sorted(rates.items()):
        if schedule == HEAD_THEN_ALL:
            lines.append(f"epoch {epoch}: groups already training drop to lr {lr / 2:.3g}")
        lines += [f"epoch {epoch}: unfreeze {g or '(model)'} at lr {r:.3g}" for g, r in released]
    return "\n".join(lines)
