"""Freezing: turn parts of a model trainable or frozen, with a BatchNorm policy.

Public functions are thin wrappers over one worker, :func:`apply_freeze`, that takes an already
resolved set of parameters and BatchNorm layers. Target resolution (dotted paths, glob patterns)
and every other check happen up front and raise before anything is touched, so a bad call never
leaves a model half-changed. BatchNorm policies live in :mod:`freeze_widgets.freezing.bn`,
FreezeSpec in :mod:`freeze_widgets.freezing.spec`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn
from torch.nn.parameter import is_lazy

from freeze_widgets.base.checks import (
    BnPolicy,
    check_bn_policy,
    require_eager_module,
    require_module,
    require_strings,
)
from freeze_widgets.base.wording import close_matches
from freeze_widgets.freezing.bn import (
    BN_POLICIES,
    FrozenBatchNorm,
    apply_bn_policy,
    bn_is_frozen,
    bn_state,
    check_bn_policy_fits,
    is_batchnorm,
    iter_batchnorms,
    set_bn_policy,
)
from freeze_widgets.freezing.change import FreezeChange
from freeze_widgets.freezing.objects import target_paths
from freeze_widgets.freezing.rollback import all_or_nothing, change_scope

__all__ = [
    "BN_POLICIES",
    "FreezeChange",
    "FrozenBatchNorm",
    "Selection",
    "apply_freeze",
    "bn_is_frozen",
    "bn_state",
    "freeze",
    "freeze_through",
    "freeze_to",
    "iter_batchnorms",
    "resolve_targets",
    "retarget",
    "select",
    "set_bn_policy",
    "top_level_groups",
    "unfreeze",
]

# --------------------------------------------------------------------------- target resolution


def _unknown_target_error(target: str, model: nn.Module) -> ValueError:
    candidates = [n for n, _ in model.named_modules(remove_duplicate=False) if n]
    candidates += [n for n, _ in model.named_parameters(remove_duplicate=False)]
    close = close_matches(target, candidates)
    hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
    top = [name for name, _ in model.named_children()][:12]
    return ValueError(
        f"No module or parameter matches {target!r}.{hint} "
        f"Targets are dotted paths from named_modules()/named_parameters() or glob patterns "
        f"such as 'layer2.*' or '*.bn1'; top-level modules are: {', '.join(top) or '(none)'}."
    )


@dataclass
class _Resolved:
    modules: list[tuple[str, nn.Module]]
    params: list[tuple[str, nn.Parameter]]


def _match_pattern(model: nn.Module, pattern: str, resolved: _Resolved) -> bool:
    hit = False
    for name, mod in model.named_modules(remove_duplicate=False):
        if name and fnmatch.fnmatchcase(name, pattern):
            resolved.modules.append((name, mod))
            hit = True
    for name, p in model.named_parameters(remove_duplicate=False):
        if fnmatch.fnmatchcase(name, pattern):
            resolved.params.append((name, p))
            hit = True
    return hit


def resolve_targets(
    model: nn.Module, targets: Iterable[str | nn.Module], *, exact: bool = False
) -> _Resolved:
    """Resolve dotted paths and glob patterns to modules and parameters.

    An exact path wins over a pattern: module names may contain glob characters
    (docs/design.md, trap 10), so ``"d.r[1]"`` is the module named ``r[1]`` when there is one.

    Args:
        model: The model the paths are relative to.
        targets: Dotted paths or glob patterns.
        exact: Treat every target as an exact path, never a pattern (saved specs).

    Raises:
        TypeError: ``model`` is not an eager module, or a target is not a string.
        ValueError: if any target matches nothing (naming close matches); nothing is changed.
    """
    require_eager_module(model)
    if isinstance(targets, str) or not isinstance(targets, Iterable):
        raise TypeError(f"targets must be an iterable of strings; got {type(targets).__name__}")
    resolved = _Resolved([], [])
    for target in target_paths(model, targets):  # module objects and nested lists too
        if not isinstance(target, str):
            raise TypeError(
                "targets must be strings (dotted paths or patterns); "
                f"got {type(target).__name__} {target!r}"
            )
        try:
            resolved.modules.append((target, model.get_submodule(target)))
            continue
        except AttributeError:
            pass
        try:
            resolved.params.append((target, model.get_parameter(target)))
            continue
        except AttributeError:
            pass
        is_pattern = not exact and any(ch in target for ch in "*?[")
        if not (is_pattern and _match_pattern(model, target, resolved)):
            raise _unknown_target_error(target, model)
    return resolved


@dataclass
class Selection:
    """Unique parameters (first name each) and the BatchNorm layers a change applies to."""

    params: list[nn.Parameter]
    names: list[str]
    bns: dict[str, nn.Module]

    def add(self, name: str, p: nn.Parameter, seen: set[int]) -> None:
        if id(p) not in seen:
            seen.add(id(p))
            self.params.append(p)
            self.names.append(name)


def select(resolved: _Resolved) -> Selection:
    """All unique parameters under the resolved targets, their names, and BatchNorm layers."""
    if not isinstance(resolved, _Resolved):
        raise TypeError(f"resolved must come from resolve_targets(); got {type(resolved).__name__}")
    seen: set[int] = set()
    out = Selection([], [], {})
    for path, mod in resolved.modules:
        for name, p in mod.named_parameters(prefix=path, remove_duplicate=False):
            out.add(name, p, seen)
        for name, sub in mod.named_modules(prefix=path, remove_duplicate=False):
            if is_batchnorm(sub):
                out.bns[name] = sub
    for name, p in resolved.params:
        out.add(name, p, seen)
    return out


# --------------------------------------------------------------------------- the worker


def apply_freeze(
    model: nn.Module,
    params: list[nn.Parameter],
    names: list[str],
    bns: dict[str, nn.Module],
    *,
    frozen: bool,
    bn: BnPolicy = "eval",
) -> FreezeChange:
    """Set ``requires_grad`` on ``params`` and apply the BatchNorm policy to ``bns``.

    The one worker behind :func:`freeze`, :func:`unfreeze`, :func:`freeze_to`,
    :func:`freeze_through` and ``ModuleTree.set_frozen``. Freezing clears ``.grad``: a stale
    gradient with momentum or weight decay still moves a "frozen" weight (docs/design.md, trap 2).
    A BatchNorm layer gets the policy only when all its parameters are frozen; unfreezing any of
    them releases it.
    """
    require_eager_module(model)
    if not isinstance(frozen, bool):
        raise TypeError(f"frozen must be True or False; got {type(frozen).__name__}")
    if not isinstance(bns, dict):
        raise TypeError(f"bns must be a dict of path -> BatchNorm; got {type(bns).__name__}")
    if not isinstance(params, list) or not all(isinstance(p, nn.Parameter) for p in params):
        raise TypeError("params must be a list of nn.Parameter (see select())")
    _check_materialised(require_strings(names, "names"), params)
    if frozen:
        check_bn_policy_fits(bns, bn)  # before touching anything
    else:
        check_bn_policy(bn)
    changed: list[str] = []
    scope = change_scope(params, bns.values(), may_swap=frozen and bn == "frozen")
    with all_or_nothing(model, *scope):
        for name, p in zip(names, params, strict=True):
            if p.requires_grad == frozen:
                p.requires_grad_(not frozen)
                changed.append(name)
            if frozen:
                p.grad = None
        bn_changes, replaced = apply_bn_policy(model, bns, frozen=frozen, bn=bn)
    flips = {"frozen": tuple(changed)} if frozen else {"unfrozen": tuple(changed)}
    return FreezeChange(**flips, batchnorm=tuple(bn_changes), replaced=tuple(replaced))


def _check_materialised(names: list[str], params: list[nn.Parameter]) -> None:
    """Lazy modules' parameters refuse ``requires_grad_`` until a forward pass creates them."""
    lazy = [name for name, p in zip(names, params, strict=True) if is_lazy(p)]
    if lazy:
        raise ValueError(
            f"{', '.join(lazy[:3])} {'is' if len(lazy) == 1 else 'are'} not materialised yet "
            "(a Lazy module): run one forward pass with a real input first, then freeze"
        )


def retarget(model: nn.Module, train: Selection, frozen: Selection, bn: BnPolicy) -> FreezeChange:
    """Make ``train`` trainable, then ``frozen`` frozen; report the net change.

    Unfreezing first means a parameter in both (tied across the two sides) ends frozen. Every
    check runs before the first change, so a failure leaves the model as it was.
    """
    require_eager_module(model)
    for argument, value in (("train", train), ("frozen", frozen)):
        if not isinstance(value, Selection):
            raise TypeError(f"{argument} must be a Selection; got {type(value).__name__}")
    _check_materialised(train.names + frozen.names, train.params + frozen.params)
    check_bn_policy_fits(frozen.bns, bn)
    before = {id(p): p.requires_grad for p in train.params + frozen.params}
    scope = change_scope(
        train.params + frozen.params,
        [*train.bns.values(), *frozen.bns.values()],
        may_swap=bn == "frozen",
    )
    with all_or_nothing(model, *scope):
        up = apply_freeze(model, train.params, train.names, train.bns, frozen=False)
        down = apply_freeze(model, frozen.params, frozen.names, frozen.bns, frozen=True, bn=bn)
    # Net flips by identity: a tied parameter may be unfrozen under one name and refrozen
    # under another; it is reported once, under its name on the frozen side.
    net = Selection([], [], {})
    seen: set[int] = set()
    for name, p in zip(frozen.names + train.names, frozen.params + train.params, strict=True):
        if p.requires_grad != before[id(p)]:
            net.add(name, p, seen)
    batchnorm = tuple(c for c in up.batchnorm + down.batchnorm if c[1] != c[2])
    return FreezeChange(
        frozen=tuple(n for n, p in zip(net.names, net.params, strict=True) if not p.requires_grad),
        unfrozen=tuple(n for n, p in zip(net.names, net.params, strict=True) if p.requires_grad),
        batchnorm=batchnorm,
        replaced=tuple(dict.fromkeys(up.replaced + down.replaced)),
    )


# --------------------------------------------------------------------------- public API


def freeze(
    model: nn.Module, *targets: str | nn.Module, bn: BnPolicy = "eval", train_bn: bool = False
) -> FreezeChange:
    """Freeze parameters of ``model`` in place.

    Args:
        model: The model; changed in place.
        *targets: Dotted module or parameter paths, or glob patterns (``"layer1"``,
            ``"layer2.*"``, ``"*.bn1"``, ``"*.bias"``). No target freezes the whole model.
            Module objects and nested lists of them work too (Lightning's style).
        bn: BatchNorm policy for layers whose parameters all end up frozen: ``"eval"`` keeps
            them in eval mode even after ``model.train()``; ``"frozen"`` swaps plain
            ``BatchNorm1d/2d/3d`` / ``SyncBatchNorm`` for :class:`FrozenBatchNorm` (under every
            name a shared layer has) and freezes any subclass in place (timm's
            ``BatchNormAct2d`` keeps its activation), so eval outputs are unchanged;
            ``"train"`` lets running statistics keep updating.
        train_bn: Lightning's ``BaseFinetuning.freeze(train_bn=True)``: BatchNorm layers under
            the targets are left out of the freeze and made trainable (weights and statistics).

    Returns:
        A :class:`FreezeChange` naming what changed.

    Raises:
        TypeError: ``model`` is not an eager module (a TorchScript module: freeze the eager
            model before scripting; scripting keeps ``requires_grad``), or a target / ``bn``
            is not a string.
        ValueError: an unknown target (close matches named) or policy; the model is unchanged.

    Example:
        >>> from torchvision.models import resnet18
        >>> m = resnet18()
        >>> _ = freeze(m, "conv1", "bn1", "layer1")
        >>> m.layer1[0].bn1.training, m.train().layer1[0].bn1.training
        (False, False)
    """
    check_bn_policy(bn)
    if not isinstance(train_bn, bool):
        raise TypeError(f"train_bn must be True or False; got {type(train_bn).__name__}")
    chosen = select(resolve_targets(model, targets or ("",)))
    if train_bn:
        return retarget(model, *_split_batchnorms(chosen), bn)
    return apply_freeze(model, chosen.params, chosen.names, chosen.bns, frozen=True, bn=bn)


def _split_batchnorms(chosen: Selection) -> tuple[Selection, Selection]:
    """``chosen`` as (its BatchNorm layers and their parameters, everything else)."""
    bn_ids = {id(p) for m in chosen.bns.values() for p in m.parameters()}
    norms, rest = Selection([], [], dict(chosen.bns)), Selection([], [], {})
    seen: dict[int, set[int]] = {id(norms): set(), id(rest): set()}
    for name, p in zip(chosen.names, chosen.params, strict=True):
        side = norms if id(p) in bn_ids else rest
        side.add(name, p, seen[id(side)])
    return norms, rest


def unfreeze(model: nn.Module, *targets: str | nn.Module) -> FreezeChange:
    """Make parameters trainable again and release BatchNorm policies, in place.

    Same targets as :func:`freeze`; no target unfreezes the whole model. A BatchNorm swapped
    for :class:`FrozenBatchNorm` is restored to the original layer.
    """
    chosen = select(resolve_targets(model, targets or ("",)))
    return apply_freeze(model, chosen.params, chosen.names, chosen.bns, frozen=False)


def top_level_groups(model: nn.Module) -> list[str]:
    """The groups :func:`freeze_to` counts: root-owned parameters, then top-level children.

    Children without parameters (ReLU, pooling) are not groups, so ``freeze_to(m, -2)`` on a
    ResNet leaves ``layer4`` and ``fc`` trainable rather than stopping at ``avgpool``.
    """
    require_module(model)
    groups = [name for name, _ in model.named_parameters(recurse=False)]
    groups += [
        name for name, child in model.named_children() if next(child.parameters(), None) is not None
    ]
    return groups


def freeze_to(model: nn.Module, n: int, *, bn: BnPolicy = "eval") -> FreezeChange:
    """Freeze the first ``n`` top-level groups and unfreeze the rest (fastai's ``freeze_to``).

    Negative ``n`` counts from the end: ``freeze_to(model, -1)`` trains only the last group.
    Groups are those of :func:`top_level_groups`.
    """
    groups = top_level_groups(require_eager_module(model))
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int; got {type(n).__name__} {n!r}")
    check_bn_policy(bn)
    if not groups:
        raise ValueError("the model has no parameters to freeze")
    if not -len(groups) <= n <= len(groups):
        raise ValueError(
            f"n={n} is out of range: the model has {len(groups)} groups "
            f"({', '.join(groups)}); use -{len(groups)}..{len(groups)}"
        )
    cut = n if n >= 0 else len(groups) + n
    train = select(resolve_targets(model, groups[cut:]))
    frozen = select(resolve_targets(model, groups[:cut]))
    return retarget(model, train, frozen, bn)


def _split_at(model: nn.Module, path: str) -> tuple[Selection, Selection]:
    """Parameters and BatchNorm layers up to and including row ``path``, and those after it.

    Module order is ``named_modules()`` pre-order, each module's own parameters before its
    children (``named_parameters()`` order). A parameter row splits its owner's parameters.
    """
    is_param = path not in dict(model.named_modules(remove_duplicate=False))
    head, tail = Selection([], [], {}), Selection([], [], {})
    seen: dict[int, set[int]] = {id(head): set(), id(tail): set()}
    inside = passed = False
    for mpath, mod in model.named_modules(remove_duplicate=False):
        in_row = not is_param and (path in ("", mpath) or mpath.startswith(path + "."))
        passed = passed or (inside and not in_row)  # the row's subtree is contiguous
        inside = inside or in_row
        if is_batchnorm(mod):
            (tail if passed else head).bns[mpath] = mod
        for pname, p in mod.named_parameters(recurse=False):
            full = f"{mpath}.{pname}" if mpath else pname
            side = tail if passed else head
            side.add(full, p, seen[id(side)])
            passed = passed or full == path
    return head, tail


def freeze_through(model: nn.Module, path: str, *, bn: BnPolicy = "eval") -> FreezeChange:
    """Freeze everything up to and including the row ``path``; make everything after it train.

    "Up to" follows the model's module order (``named_modules()`` pre-order): earlier siblings
    and their subtrees, parameters owned directly by an ancestor (they come before its
    children), and the row's own subtree are frozen; every later module trains. Works for any
    row, nested ones included (``"layer2.0.conv2"``, ``"model.layers.11"``), and for a
    parameter row (``"class_token"``). A parameter tied across the cut ends frozen.

    Args:
        model: The model; changed in place.
        path: A dotted module or parameter path (not a pattern); ``""`` freezes everything.
        bn: BatchNorm policy for the frozen layers (see :func:`freeze`).

    Returns:
        A :class:`FreezeChange` with the net change.

    Raises:
        TypeError: ``model`` is not a module or ``path`` not a string.
        ValueError: an unknown path (close matches named) or policy; the model is unchanged.

    Example:
        >>> from torchvision.models import resnet18
        >>> m = resnet18()
        >>> _ = freeze_through(m, "layer2.0.conv2")
        >>> m.layer2[0].conv2.weight.requires_grad, m.layer2[0].bn2.weight.requires_grad
        (False, True)
    """
    require_eager_module(model)
    if not isinstance(path, str):
        raise TypeError(f"path must be a dotted path string; got {type(path).__name__} {path!r}")
    check_bn_policy(bn)
    try:
        model.get_submodule(path)
    except AttributeError:
        try:
            model.get_parameter(path)
        except AttributeError:
            raise _unknown_target_error(path, model) from None
    head, tail = _split_at(model, path)
    return retarget(model, tail, head, bn)
