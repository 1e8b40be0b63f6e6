"""Freezing: turn parts of a model trainable or frozen, with a BatchNorm policy.

Public functions are thin wrappers over one worker, :func:`apply_freeze`, that takes an already
resolved set of parameters and BatchNorm layers. Target resolution (dotted paths, glob patterns)
happens up front and raises before anything is touched, so a bad target never leaves a model
half-changed.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "BN_POLICIES",
    "BnPolicy",
    "FreezeChange",
    "FreezeSpec",
    "FrozenBatchNorm",
    "apply_freeze",
    "bn_is_frozen",
    "freeze",
    "freeze_to",
    "resolve_targets",
    "set_bn_policy",
    "top_level_groups",
    "unfreeze",
]

BnPolicy = Literal["eval", "frozen", "train"]
BN_POLICIES: tuple[str, ...] = ("eval", "frozen", "train")


# --------------------------------------------------------------------------- BatchNorm policies


class _StayInEval:
    """Replacement for a BatchNorm's bound ``train`` method: ``model.train()`` cannot undo eval.

    A plain ``bn.eval()`` is undone by the next ``model.train()``, which is the classic way frozen
    BatchNorm statistics drift. A callable object (not a lambda) so the model still pickles and
    deep-copies.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        self.module.training = False
        return self.module


class FrozenBatchNorm(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, for any of 1d/2d/3d.

    Unlike torchvision's ``FrozenBatchNorm2d`` it keeps ``weight`` and ``bias`` as (frozen)
    parameters, the very same tensors as the layer it replaces, so parameter counts and optimizer
    state are unaffected, and :func:`unfreeze` can put the original layer back.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, bn: _BatchNorm) -> None:
        super().__init__()
        self.num_features = bn.num_features
        self.eps = bn.eps
        self.original_type = type(bn).__name__
        self.weight = bn.weight
        self.bias = bn.bias
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(
                f"{type(bn).__name__} without running statistics "
                "(track_running_stats=False) cannot be swapped for a FrozenBatchNorm; "
                'use bn="eval" instead'
            )
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        # Kept out of the module registry so it shows neither in the tree nor in state_dict.
        object.__setattr__(self, "_original", bn)

    @property
    def original(self) -> _BatchNorm:
        """The BatchNorm layer this one replaced (restored by :func:`unfreeze`)."""
        bn: _BatchNorm = self.__dict__["_original"]
        return bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=False,
            momentum=0.0,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, frozen {self.original_type}"


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, FrozenBatchNorm))


def bn_state(module: nn.Module) -> str:
    """How a BatchNorm layer currently treats its statistics: "frozen", "eval" or "train"."""
    if isinstance(module, FrozenBatchNorm):
        return "frozen"
    if isinstance(module.__dict__.get("train"), _StayInEval):
        return "eval"
    return "train"


def _release_bn(module: nn.Module) -> nn.Module:
    """Undo any policy on a BatchNorm layer; returns the module that should sit in the model."""
    if isinstance(module, FrozenBatchNorm):
        module = module.original
    if isinstance(module.__dict__.get("train"), _StayInEval):
        del module.__dict__["train"]
    return module


# --------------------------------------------------------------------------- change record


@dataclass(frozen=True)
class FreezeChange:
    """What one freeze / unfreeze call changed.

    Attributes:
        frozen: Parameter names whose ``requires_grad`` went True -> False.
        unfrozen: Parameter names whose ``requires_grad`` went False -> True.
        batchnorm: ``(path, before, after)`` for each BatchNorm layer whose policy changed.
        replaced: Paths where a module object was swapped (the "frozen" BatchNorm policy).
    """

    frozen: tuple[str, ...] = ()
    unfrozen: tuple[str, ...] = ()
    batchnorm: tuple[tuple[str, str, str], ...] = ()
    replaced: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.frozen or self.unfrozen or self.batchnorm)

    def __str__(self) -> str:
        parts = []
        if self.frozen:
            parts.append(f"froze {len(self.frozen)} parameter tensors")
        if self.unfrozen:
            parts.append(f"unfroze {len(self.unfrozen)} parameter tensors")
        if self.batchnorm:
            parts.append(f"{len(self.batchnorm)} BatchNorm layers changed policy")
        return ", ".join(parts) or "nothing changed"


# --------------------------------------------------------------------------- target resolution


def _module_paths(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules(remove_duplicate=False)]


def _param_paths(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters(remove_duplicate=False)]


def _close_matches(target: str, candidates: list[str]) -> list[str]:
    close = difflib.get_close_matches(target, candidates, n=5, cutoff=0.5)
    if not close:
        # Fall back to paths sharing the last component ("bn1" -> "layer1.0.bn1").
        last = target.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == last][:5]
    return close


def _unknown_target_error(target: str, model: nn.Module) -> ValueError:
    candidates = [p for p in _module_paths(model) if p] + _param_paths(model)
    close = _close_matches(target, candidates)
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


def resolve_targets(model: nn.Module, targets: Iterable[str]) -> _Resolved:
    """Resolve dotted paths and glob patterns to modules and parameters.

    Raises:
        ValueError: if any target matches nothing (naming close matches); nothing is changed.
    """
    modules: dict[str, nn.Module] = {}
    params: dict[str, nn.Parameter] = {}
    module_items: list[tuple[str, nn.Module]] | None = None
    param_items: list[tuple[str, nn.Parameter]] | None = None
    for target in targets:
        if not isinstance(target, str):
            raise TypeError(f"targets must be strings (dotted paths or patterns), got {target!r}")
        if any(ch in target for ch in "*?["):
            if module_items is None:
                module_items = list(model.named_modules(remove_duplicate=False))
                param_items = list(model.named_parameters(remove_duplicate=False))
            assert param_items is not None
            hit = False
            for name, mod in module_items:
                if name and fnmatch.fnmatchcase(name, target):
                    modules[name] = mod
                    hit = True
            for name, p in param_items:
                if fnmatch.fnmatchcase(name, target):
                    params[name] = p
                    hit = True
            if not hit:
                raise _unknown_target_error(target, model)
            continue
        try:
            modules[target] = model.get_submodule(target)
            continue
        except AttributeError:
            pass
        try:
            params[target] = model.get_parameter(target)
        except AttributeError:
            raise _unknown_target_error(target, model) from None
    return _Resolved(list(modules.items()), list(params.items()))


def _expand(
    model: nn.Module, resolved: _Resolved
) -> tuple[list[nn.Parameter], list[str], dict[str, nn.Module]]:
    """All unique parameters under the resolved targets, their names, and BatchNorm layers."""
    seen: set[int] = set()
    plist: list[nn.Parameter] = []
    names: list[str] = []
    bns: dict[str, nn.Module] = {}

    def add(name: str, p: nn.Parameter) -> None:
        if id(p) not in seen:
            seen.add(id(p))
            plist.append(p)
            names.append(name)

    for path, mod in resolved.modules:
        for name, p in mod.named_parameters(prefix=path, remove_duplicate=False):
            add(name, p)
        for name, sub in mod.named_modules(prefix=path, remove_duplicate=False):
            if _is_bn(sub):
                bns[name] = sub
    for name, p in resolved.params:
        add(name, p)
    return plist, names, bns


# --------------------------------------------------------------------------- the worker


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def apply_freeze(
    model: nn.Module,
    params: list[nn.Parameter],
    names: list[str],
    bns: dict[str, nn.Module],
    *,
    frozen: bool,
    bn: str = "eval",
) -> FreezeChange:
    """Set ``requires_grad`` on ``params`` and apply the BatchNorm policy to ``bns``.

    The one worker behind :func:`freeze`, :func:`unfreeze`, :func:`freeze_to` and
    ``ModuleTree.set_frozen``. Freezing clears ``.grad`` (a stale gradient with momentum or
    weight decay still moves a "frozen" weight). A BatchNorm layer gets the policy only when all
    its parameters are frozen; unfreezing any of them releases it.
    """
    if bn not in BN_POLICIES:
        raise ValueError(f"bn must be one of {', '.join(BN_POLICIES)}; got {bn!r}")
    if frozen and bn == "frozen":
        # Validate before touching anything: a failure must not leave the model half-changed.
        for path, mod in bns.items():
            if isinstance(mod, _BatchNorm) and mod.running_mean is None:
                raise ValueError(
                    f"{path} ({type(mod).__name__}) has no running statistics "
                    '(track_running_stats=False), so it cannot be a FrozenBatchNorm; use bn="eval"'
                )
    changed: list[str] = []
    for name, p in zip(names, params, strict=False):
        if p.requires_grad == frozen:
            p.requires_grad_(not frozen)
            changed.append(name)
        if frozen:
            p.grad = None
    bn_changes: list[tuple[str, str, str]] = []
    replaced: list[str] = []
    for path, mod in bns.items():
        before = bn_state(mod)
        # A BatchNorm whose parameters are tied to something still trainable keeps training.
        all_frozen = not any(p.requires_grad for p in mod.parameters())
        target = bn if (frozen and all_frozen) else "train"
        if before == target:
            continue
        new = _release_bn(mod)
        if target == "eval":
            new.eval()
            object.__setattr__(new, "train", _StayInEval(new))
        elif target == "frozen":
            assert isinstance(new, _BatchNorm)
            new = FrozenBatchNorm(new)
        else:
            new.train(_parent_training(model, path))
        if new is not mod:
            _set_submodule(model, path, new)
            replaced.append(path)
        bn_changes.append((path, before, target))
    if frozen:
        return FreezeChange(
            frozen=tuple(changed), batchnorm=tuple(bn_changes), replaced=tuple(replaced)
        )
    return FreezeChange(
        unfrozen=tuple(changed), batchnorm=tuple(bn_changes), replaced=tuple(replaced)
    )


def _parent_training(model: nn.Module, path: str) -> bool:
    parent_path = path.rpartition(".")[0]
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent.training


# --------------------------------------------------------------------------- public API


def freeze(model: nn.Module, *targets: str, bn: str = "eval") -> FreezeChange:
    """Freeze parameters of ``model`` in place.

    Args:
        model: The model; changed in place.
        *targets: Dotted module or parameter paths, or glob patterns (``"layer1"``,
            ``"layer2.*"``, ``"*.bn1"``, ``"*.bias"``). No target freezes the whole model.
        bn: BatchNorm policy for layers whose parameters all end up frozen: ``"eval"`` keeps
            them in eval mode even after ``model.train()``; ``"frozen"`` swaps them for
            :class:`FrozenBatchNorm`; ``"train"`` lets running statistics keep updating.

    Returns:
        A :class:`FreezeChange` naming what changed.

    Raises:
        ValueError: an unknown target (close matches named) or policy; the model is unchanged.

    Example:
        >>> from torchvision.models import resnet18
        >>> m = resnet18()
        >>> _ = freeze(m, "conv1", "bn1", "layer1")
        >>> m.layer1[0].bn1.training, m.train().layer1[0].bn1.training
        (False, False)
    """
    if bn not in BN_POLICIES:
        raise ValueError(f"bn must be one of {', '.join(BN_POLICIES)}; got {bn!r}")
    resolved = resolve_targets(model, targets or ("",))
    return apply_freeze(model, *_expand(model, resolved), frozen=True, bn=bn)


def unfreeze(model: nn.Module, *targets: str) -> FreezeChange:
    """Make parameters trainable again and release BatchNorm policies, in place.

    Same targets as :func:`freeze`; no target unfreezes the whole model. A BatchNorm swapped
    for :class:`FrozenBatchNorm` is restored to the original layer.
    """
    resolved = resolve_targets(model, targets or ("",))
    return apply_freeze(model, *_expand(model, resolved), frozen=False)


def top_level_groups(model: nn.Module) -> list[str]:
    """The groups :func:`freeze_to` counts: root-owned parameters, then top-level children.

    Children without parameters (ReLU, pooling) are not groups, so ``freeze_to(m, -2)`` on a
    ResNet leaves ``layer4`` and ``fc`` trainable rather than stopping at ``avgpool``.
    """
    groups = [name for name, _ in model.named_parameters(recurse=False)]
    groups += [
        name for name, child in model.named_children() if next(child.parameters(), None) is not None
    ]
    return groups


def freeze_to(model: nn.Module, n: int, *, bn: str = "eval") -> FreezeChange:
    """Freeze the first ``n`` top-level groups and unfreeze the rest (fastai's ``freeze_to``).

    Negative ``n`` counts from the end: ``freeze_to(model, -1)`` trains only the last group.
    Groups are those of :func:`top_level_groups`.
    """
    groups = top_level_groups(model)
    if not groups:
        raise ValueError("the model has no parameters to freeze")
    if not isinstance(n, int):
        raise TypeError(f"n must be an int, got {n!r}")
    if not -len(groups) <= n <= len(groups):
        raise ValueError(
            f"n={n} is out of range: the model has {len(groups)} groups "
            f"({', '.join(groups)}); use -{len(groups)}..{len(groups)}"
        )
    cut = n if n >= 0 else len(groups) + n
    to_freeze, to_train = groups[:cut], groups[cut:]
    # Unfreeze first so a parameter tied across groups ends frozen if any of its groups is.
    up = (
        apply_freeze(model, *_expand(model, resolve_targets(model, to_train)), frozen=False)
        if to_train
        else FreezeChange()
    )
    down = (
        apply_freeze(model, *_expand(model, resolve_targets(model, to_freeze)), frozen=True, bn=bn)
        if to_freeze
        else FreezeChange()
    )
    return FreezeChange(
        frozen=down.frozen,
        unfrozen=tuple(n for n in up.unfrozen if n not in set(down.frozen)),
        batchnorm=up.batchnorm + down.batchnorm,
        replaced=up.replaced + down.replaced,
    )


# --------------------------------------------------------------------------- FreezeSpec


def _frozen_paths(model: nn.Module) -> list[str]:
    """Highest fully-frozen module paths, plus frozen parameters of partly-frozen modules."""
    out: list[str] = []

    def counts(mod: nn.Module) -> tuple[int, int]:
        ps = list(mod.parameters())
        return len(ps), sum(1 for p in ps if not p.requires_grad)

    def walk(path: str, mod: nn.Module) -> None:
        total, frozen = counts(mod)
        if total == 0 or frozen == 0:
            return
        if frozen == total:
            out.append(path)
            return
        prefix = f"{path}." if path else ""
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                out.append(prefix + name)
        for name, child in mod.named_children():
            walk(prefix + name, child)

    walk("", model)
    return out


@dataclass(frozen=True)
class FreezeSpec:
    """A freeze as data: the shortest list of frozen paths plus the BatchNorm policy.

    ``""`` in ``frozen`` means the whole model. Round-trips through JSON and can be written out
    as plain PyTorch code with :meth:`to_code`.
    """

    frozen: tuple[str, ...] = ()
    bn: str = "eval"

    @classmethod
    def from_model(cls, model: nn.Module, *, bn: str | None = None) -> FreezeSpec:
        """Record the current ``requires_grad`` state of ``model``.

        The BatchNorm policy is read off the model (the first BatchNorm with a policy) unless
        given.
        """
        if bn is None:
            states = {bn_state(m) for m in model.modules() if _is_bn(m)} - {"train"}
            bn = "frozen" if "frozen" in states else "eval"
        return cls(tuple(_frozen_paths(model)), bn)

    def apply(self, model: nn.Module) -> FreezeChange:
        """Make ``model`` frozen exactly at these paths and trainable elsewhere, in place.

        Raises:
            ValueError: a path does not exist in ``model`` (close matches named); the model is
                left unchanged.
        """
        if self.bn not in BN_POLICIES:
            raise ValueError(
                f"FreezeSpec.bn must be one of {', '.join(BN_POLICIES)}; got {self.bn!r}"
            )
        frozen_targets = resolve_targets(model, self.frozen)  # validate before any change
        up = apply_freeze(model, *_expand(model, resolve_targets(model, [""])), frozen=False)
        down = apply_freeze(model, *_expand(model, frozen_targets), frozen=True, bn=self.bn)
        down_set = set(down.frozen)
        return FreezeChange(
            frozen=tuple(n for n in down.frozen if n not in set(up.unfrozen)),
            unfrozen=tuple(n for n in up.unfrozen if n not in down_set),
            batchnorm=tuple(c for c in up.batchnorm + down.batchnorm if c[1] != c[2]),
            replaced=up.replaced + down.replaced,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": "freeze_widgets.FreezeSpec",
                "version": 1,
                "frozen": list(self.frozen),
                "bn": self.bn,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> FreezeSpec:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: the text is not a FreezeSpec JSON document (says what is wrong).
        """
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a FreezeSpec: invalid JSON ({exc})") from None
        if not isinstance(data, dict) or "frozen" not in data:
            raise ValueError(
                'not a FreezeSpec: expected a JSON object with a "frozen" list of paths '
                "(as written by FreezeSpec.to_json())"
            )
        frozen = data["frozen"]
        if not isinstance(frozen, list) or not all(isinstance(p, str) for p in frozen):
            raise ValueError('not a FreezeSpec: "frozen" must be a list of path strings')
        bn = data.get("bn", "eval")
        if bn not in BN_POLICIES:
            raise ValueError(
                f"not a FreezeSpec: bn must be one of {', '.join(BN_POLICIES)}, got {bn!r}"
            )
        return cls(tuple(frozen), bn)

    def to_code(self) -> str:
        """Plain PyTorch (no freeze_widgets import) that reproduces this freeze on ``model``."""
        lines = [
            "# Freeze reproduced without freeze_widgets; run with `model` in scope.",
            "import torch",
            "",
        ]
        if "" in self.frozen:
            lines += ["frozen_paths = None  # the whole model", ""]
            hit = "True"
        else:
            lines.append("frozen_paths = [")
            lines += [f"    {p!r}," for p in self.frozen]
            lines += ["]", ""]
            hit = 'any(n == f or n.startswith(f + ".") for f in frozen_paths)'
        lines += [
            "def is_frozen(n):",
            f"    return {hit}",
            "",
            "# Collect ids first: a tied parameter is frozen if any of its names is.",
            "frozen_ids = {",
            "    id(p) for n, p in model.named_parameters(remove_duplicate=False) if is_frozen(n)",
            "}",
            "for p in model.parameters():",
            "    p.requires_grad_(id(p) not in frozen_ids)",
            "    if id(p) in frozen_ids:",
            "        p.grad = None  # a stale gradient would still move it under momentum",
        ]
        if self.bn in ("eval", "frozen"):
            lines += [
                "",
                "# Frozen BatchNorm layers keep their running statistics: eval mode that",
                "# survives model.train().",
                "for n, m in model.named_modules():",
                "    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and is_frozen(n):",
                "        m.eval()",
                "        m.train = lambda mode=True, m=m: m",
            ]
        return "\n".join(lines) + "\n"


def bn_is_frozen(module: nn.Module) -> bool:
    """A BatchNorm counts as frozen when all its parameters are (or, without any, by policy)."""
    params = list(module.parameters())
    if params:
        return not any(p.requires_grad for p in params)
    return bn_state(module) != "train"


def set_bn_policy(model: nn.Module, bn: str) -> FreezeChange:
    """Re-apply a BatchNorm policy to every frozen BatchNorm layer of ``model``, in place."""
    frozen = {path: mod for path, mod in iter_batchnorms(model) if path and bn_is_frozen(mod)}
    return apply_freeze(model, [], [], frozen, frozen=True, bn=bn)


def iter_batchnorms(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every BatchNorm layer (including swapped :class:`FrozenBatchNorm`) with its path."""
    for name, mod in model.named_modules():
        if _is_bn(mod):
            yield name, mod
