"""``param_groups``: per-group learning rates beside the freeze, as plain torch param groups.

Freezing is the zero end of a dial whose other settings are per-group learning rates. This
module turns the recipes that use both into ordinary ``torch.optim`` param groups whose ``lr``
is already set, so any scheduler works (timm's ``create_optimizer_v2(layer_decay=...)`` stores
the scale as ``lr_scale`` and only timm's own scheduler applies it):

* layer-wise decay (BEiT / timm ``param_groups_layer_decay``): depth group ``i`` of ``n`` gets
  ``lr * layer_decay ** (n - 1 - i)``;
* discriminative rates (fastai): ``lr=slice(lo, hi)`` spreads geometrically over the depth
  groups (``even_mults``), ``slice(None, hi)`` gives ``hi / 10`` to all but the last;
* multipliers by path or glob (OpenMMLab ``paramwise_cfg.custom_keys``): the longest matching
  key wins, as in mmengine; among keys of equal length the one given first.

Depth groups are timm's ``group_matcher`` layers when the model has one, otherwise its
top-level groups (:func:`~freeze_widgets.freezing.targets.top_level_groups`). Frozen parameters
are left out; a tied parameter appears once, in the group of its first name.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from freeze_widgets.base.checks import require_module
from freeze_widgets.base.wording import unknown_name_error
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.freezing.targets import resolve_targets, select, top_level_groups
from freeze_widgets.training.options import require_positive_number

__all__ = [
    "DEFAULT_NO_DECAY",
    "LR_GROUPS_KEYS",
    "NORM_TYPES",
    "check_param_groups_args",
    "even_mults",
    "param_groups",
    "param_lr_table",
    "resolve_lr_groups",
]

#: Layers whose weights get no weight decay by default (timm excludes every 1-D parameter).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)

#: Biases and the parameters of normalisation layers: no weight decay.
DEFAULT_NO_DECAY: tuple[str | type[nn.Module], ...] = ("bias", *NORM_TYPES)

LrArg = float | slice


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """fastai's ``even_mults``: ``n`` rates from ``start`` to ``stop``, evenly spaced in log."""
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step**i for i in range(n)]


def check_rate(value: object, argument: str, *, allow_zero: bool = False) -> float:
    """A finite rate above 0 (or at least 0 where a multiplier may switch a group off)."""
    if allow_zero and value == 0 and not isinstance(value, bool):
        return 0.0
    return require_positive_number(value, argument)


def _check_lr(lr: object) -> tuple[float | None, float]:
    """``lr`` as (low, high); a number gives low == high, ``slice(None, hi)`` low None."""
    if isinstance(lr, slice):
        if lr.step is not None:
            raise ValueError(f"lr=slice(lo, hi) takes no step; got {lr!r}")
        hi = check_rate(lr.stop, "lr.stop (the rate of the last group)")
        lo = None if lr.start is None else check_rate(lr.start, "lr.start")
        return lo, hi
    rate = check_rate(lr, "lr")
    return rate, rate


def check_layer_decay(layer_decay: object) -> float | None:
    if layer_decay is None:
        return None
    if not isinstance(layer_decay, (int, float)) or isinstance(layer_decay, bool):
        raise TypeError(f"layer_decay must be a number in (0, 1]; got {layer_decay!r}")
    if not (math.isfinite(layer_decay) and 0 < layer_decay <= 1):
        raise ValueError(
            f"layer_decay must be in (0, 1] (each layer closer to the input trains at this "
            f"fraction of the next one's rate; 0.65-0.75 is usual for ViT); got {layer_decay!r}"
        )
    return float(layer_decay)


def check_mults(lr_mult: object) -> dict[str, float]:
    if lr_mult is None:
        return {}
    if not isinstance(lr_mult, Mapping):
        raise TypeError(
            "lr_mult must map paths or glob patterns to multipliers, e.g. {'backbone': 0.1}; "
            f"got {type(lr_mult).__name__}"
        )
    out: dict[str, float] = {}
    for key, value in lr_mult.items():
        if not isinstance(key, str):
            raise TypeError(f"lr_mult keys must be paths or glob patterns; got {key!r}")
        out[key] = check_rate(value, f"lr_mult[{key!r}]", allow_zero=True)
    return out


@dataclass(frozen=True)
class _Plan:
    lo: float | None
    hi: float
    spread: bool
    layer_decay: float | None
    mults: dict[str, float]
    weight_decay: float
    no_decay: tuple[str | type[nn.Module], ...]


def _plan(
    lr: object,
    layer_decay: object,
    lr_mult: object,
    weight_decay: object,
    no_decay: object,
    spec: FreezeSpec | None,
) -> _Plan:
    lo, hi = _check_lr(lr)
    decay = check_layer_decay(layer_decay)
    if isinstance(lr, slice) and decay is not None:
        raise ValueError(
            "pass either lr=slice(lo, hi) or layer_decay, not both: each spreads the rate over "
            "the depth groups"
        )
    if spec is not None and not isinstance(spec, FreezeSpec):
        raise TypeError(f"spec must be a FreezeSpec or None; got {type(spec).__name__}")
    mults = {**(dict(spec.lr_mult) if spec is not None else {}), **check_mults(lr_mult)}
    wd = 0.0 if weight_decay == 0 else check_rate(weight_decay, "weight_decay")
    if isinstance(no_decay, str) or not isinstance(no_decay, Collection):
        raise TypeError("no_decay must be a collection of names, glob patterns or module types")
    for item in no_decay:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
            raise TypeError(f"no_decay items must be strings or nn.Module types; got {item!r}")
    return _Plan(lo, hi, isinstance(lr, slice), decay, mults, wd, tuple(no_decay))


def _depth_map(model: nn.Module) -> tuple[dict[str, int], list[str]]:
    """Parameter name -> depth group index, and a label per depth group (input side first)."""
    matcher = getattr(model, "group_matcher", None)
    if callable(matcher):
        from timm.models._manipulate import group_parameters

        layers: dict[str, int] = group_parameters(model, matcher(coarse=False), reverse=True)
        n = max(layers.values()) + 1 if layers else 1
        return dict(layers), [f"layer_{i}" for i in range(n)]
    groups = top_level_groups(model)
    depth: dict[str, int] = {}
    for i, group in enumerate(groups):
        prefix = f"{group}."
        for name, _ in model.named_parameters():
            if name == group or name.startswith(prefix):
                depth.setdefault(name, i)
    return depth, groups or [""]


def _depth_rates(plan: _Plan, n: int) -> list[float]:
    """The rate of each depth group before multipliers."""
    if plan.spread:
        if plan.lo is None:  # fastai's lr_range(slice(hi)): hi / 10 for all but the last
            return [plan.hi / 10] * (n - 1) + [plan.hi]
        return even_mults(plan.lo, plan.hi, n)
    if plan.layer_decay is not None:
        return [plan.hi * plan.layer_decay ** (n - 1 - i) for i in range(n)]
    return [plan.hi] * n


def mults_by_param(model: nn.Module, mults: dict[str, float]) -> dict[int, float]:
    """Parameter id -> multiplier of the longest key that covers it (first given on ties)."""
    winner: dict[int, tuple[int, float]] = {}
    for key, mult in mults.items():
        try:
            chosen = select(resolve_targets(model, [key]))
        except ValueError as exc:
            raise ValueError(f"lr_mult key {key!r}: {exc}") from None
        for p in chosen.params:
            if id(p) not in winner or len(key) > winner[id(p)][0]:
                winner[id(p)] = (len(key), mult)
    return {pid: mult for pid, (_, mult) in winner.items()}


def _no_decay(model: nn.Module, plan: _Plan) -> set[str]:
    """Names of the parameters that get no weight decay."""
    names: set[str] = set()
    types = tuple(t for t in plan.no_decay if isinstance(t, type))
    texts = [t for t in plan.no_decay if isinstance(t, str)]
    for mpath, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{mpath}.{pname}" if mpath else pname
            hit = isinstance(module, types) if types else False
            hit = hit or any(
                t in (pname, full) or full.startswith(f"{t}.") or fnmatch.fnmatchcase(full, t)
                for t in texts
            )
            if hit:
                names.add(full)
    return names


def _check_against_spec(model: nn.Module, spec: FreezeSpec) -> None:
    """The model must be frozen as ``spec`` says: groups built otherwise would train frozen ones."""
    frozen = {id(p) for p in select(resolve_targets(model, spec.frozen, exact=True)).params}
    differ = [n for n, p in model.named_parameters() if (id(p) in frozen) == p.requires_grad]
    if differ:
        raise ValueError(
            f"the model is not frozen as the spec says ({len(differ)} parameters differ, e.g. "
            f"{', '.join(differ[:3])}); apply it first with spec.apply(model)"
        )


def param_groups(
    model: nn.Module,
    lr: LrArg,
    *,
    spec: FreezeSpec | None = None,
    layer_decay: float | None = None,
    lr_mult: Mapping[str, float] | None = None,
    weight_decay: float = 0.0,
    no_decay: Collection[str | type[nn.Module]] = DEFAULT_NO_DECAY,
) -> list[dict[str, Any]]:
    """Plain torch param groups with per-group learning rates, frozen parameters left out.

    Args:
        model: The model; its ``requires_grad`` flags say what is frozen.
        lr: The rate of the last depth group (the head side), or ``slice(lo, hi)``: rates
            spread geometrically from ``lo`` (first group) to ``hi`` (fastai); ``slice(hi)``
            gives ``hi / 10`` to every group but the last.
        spec: A :class:`FreezeSpec` the model must match; its ``lr_mult`` is used (``lr_mult``
            given here overrides the same keys).
        layer_decay: In (0, 1]: depth group ``i`` of ``n`` trains at ``lr * layer_decay **
            (n - 1 - i)`` (timm / BEiT layer-wise decay).
        lr_mult: Path or glob -> multiplier (0 keeps a trainable group at rate 0, as under DDP,
            docs/design.md trap 11); the longest matching key wins.
        weight_decay: Decay for every parameter not matched by ``no_decay`` (and 0 wherever the
            rate is 0, so a switched-off group does not shrink when a scheduler raises it).
        no_decay: Parameter names (last component, full path or glob) and module types whose
            parameters get no weight decay.

    Returns:
        Groups in depth order, each ``{"params", "param_names", "lr", "weight_decay",
        "group"}`` (``group`` names the depth group). They carry no ``lr_scale``: timm's
        scheduler multiplies it into each group's own initial ``lr``, so with the rate already
        set it would apply twice; any scheduler, timm's included, scales the rates set here.

    Raises:
        TypeError: an argument of the wrong type (named).
        ValueError: a rate below or at 0, ``layer_decay`` outside (0, 1], an ``lr_mult`` key
            that matches nothing (close matches named), a model with no parameters or none
            trainable, or a model not frozen as ``spec`` says.
    """
    require_module(model)
    plan = _plan(lr, layer_decay, lr_mult, weight_decay, no_decay, spec)
    return _build(model, plan, spec)


def check_param_groups_args(model: nn.Module, lr: LrArg, **kwargs: Any) -> None:
    """Validate ``param_groups`` arguments (keys resolved) without needing trainable parameters."""
    require_module(model)
    plan = _plan(
        lr,
        kwargs.get("layer_decay"),
        kwargs.get("lr_mult"),
        kwargs.get("weight_decay", 0.0),
        kwargs.get("no_decay", DEFAULT_NO_DECAY),
        kwargs.get("spec"),
    )
    mults_by_param(model, plan.mults)


def _build(model: nn.Module, plan: _Plan, spec: FreezeSpec | None) -> list[dict[str, Any]]:
    named = list(model.named_parameters())  # de-duplicated: a tied parameter once
    if not named:
        raise ValueError("the model has no parameters: there is nothing to put in param groups")
    if spec is not None:
        _check_against_spec(model, spec)
    if not any(p.requires_grad for _, p in named):
        raise ValueError(
            f"all {len(named)} parameters are frozen: nothing to optimize; unfreeze some first "
            "(unfreeze(model, 'head'))"
        )
    depth, labels = _depth_map(model)
    rates = _depth_rates(plan, len(labels))
    mults = mults_by_param(model, plan.mults)
    no_decay = _no_decay(model, plan) if plan.weight_decay else set()
    groups: dict[tuple[int, float, float], dict[str, Any]] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        i = depth.get(name, len(labels) - 1)  # unmatched (head, neck): the last, like timm
        rate = rates[i] * mults.get(id(p), 1.0)
        wd = 0.0 if name in no_decay or rate == 0 else plan.weight_decay
        group = groups.setdefault(
            (i, rate, wd),
            {
                "params": [],
                "param_names": [],
                "lr": rate,
                "weight_decay": wd,
                "group": labels[i],
            },
        )
        group["params"].append(p)
        group["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: k[0])]  # stable: first seen first


def param_lr_table(groups: list[dict[str, Any]]) -> dict[str, float]:
    """Parameter name -> learning rate, from groups that carry ``param_names``."""
    return {n: float(g["lr"]) for g in groups for n in g.get("param_names", [])}


#: What ``finetune(lr_groups=...)`` takes: ``param_groups``' keywords, and ``lr_min`` for
#: fastai's ``slice(lr_min, lr)``.
LR_GROUPS_KEYS = ("layer_decay", "lr_mult", "weight_decay", "no_decay", "spec", "lr_min")


def resolve_lr_groups(lr: float, lr_groups: object) -> tuple[LrArg, dict[str, Any]] | None:
    """``finetune``'s ``lr_groups`` as (``lr`` argument, keywords) for :func:`param_groups`.

    Raises:
        TypeError: ``lr_groups`` is not a mapping.
        ValueError: an unknown key (close matches named) or a bad ``lr_min``.
    """
    if lr_groups is None:
        return None
    if not isinstance(lr_groups, Mapping):
        raise TypeError(
            "lr_groups must be a dict of param_groups keywords, e.g. {'layer_decay': 0.75} or "
            f"{{'lr_mult': {{'fc': 10}}}}; got {type(lr_groups).__name__}"
        )
    for key in lr_groups:
        if key not in LR_GROUPS_KEYS:
            raise unknown_name_error(
                "lr_groups key",
                str(key),
                LR_GROUPS_KEYS,
                way_out=f"lr_groups takes {', '.join(LR_GROUPS_KEYS)} (the top rate is lr).",
            )
    kwargs = dict(lr_groups)
    lr_min = kwargs.pop("lr_min", None)
    if lr_min is None:
        return lr, kwargs
    return slice(check_rate(lr_min, "lr_groups['lr_min']"), lr), kwargs
