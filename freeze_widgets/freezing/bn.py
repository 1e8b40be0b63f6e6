"""BatchNorm policies for frozen layers: stay in eval, swap for FrozenBatchNorm, or keep training.

``requires_grad=False`` does not stop running statistics from updating in train mode, and
``model.train()`` undoes a one-off ``bn.eval()`` (docs/design.md, trap 1): a policy here survives
``model.train()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parameter import is_lazy

from freeze_widgets.base.checks import (
    BN_POLICIES,
    BnPolicy,
    check_bn_policy,
    require_eager_module,
    require_module,
)
from freeze_widgets.base.modules import parent_path, set_submodule
from freeze_widgets.freezing.change import FreezeChange

__all__ = [
    "BN_POLICIES",
    "FrozenBatchNorm",
    "apply_bn_policy",
    "bn_is_frozen",
    "bn_state",
    "check_bn_policy_fits",
    "is_batchnorm",
    "iter_batchnorms",
    "peer_frozen_bn",
    "peer_policy",
    "release_bn",
    "set_bn_policy",
    "swaps_when_frozen",
]


class _StayInEval:
    """Replacement for a BatchNorm's bound ``train`` method: ``model.train()`` cannot undo eval.

    A callable object (not a lambda) so the model still pickles and deep-copies.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        self.module.training = False
        return self.module


class _FrozenInPlace(_StayInEval):
    """The "frozen" policy for a layer that cannot be swapped: it keeps its class, sits in eval.

    Used for BatchNorm subclasses with behaviour of their own (timm's ``BatchNormAct2d`` fuses an
    activation and drop, docs/design.md, trap 9) and for lazy layers not yet materialised.
    """


# Only these exact types are swapped for FrozenBatchNorm: their eval forward is exactly
# F.batch_norm with the running statistics, so the swap keeps the output bit for bit.
_SWAPPABLE: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
)


def swaps_when_frozen(module: nn.Module) -> bool:
    """True when the "frozen" policy swaps ``module`` for a :class:`FrozenBatchNorm`.

    Plain ``BatchNorm1d/2d/3d`` and ``SyncBatchNorm`` with running statistics are swapped.
    Any subclass (timm's ``BatchNormAct2d``, a user's own) and a lazy layer still holding
    uninitialised parameters is frozen in place instead: parameters frozen, eval mode that
    survives ``model.train()``, class and forward kept, so its eval output is unchanged.
    """
    if type(module) not in _SWAPPABLE:
        return False
    return not any(
        is_lazy(t) for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))
    )


class FrozenBatchNorm(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, for any of 1d/2d/3d.

    Unlike torchvision's ``FrozenBatchNorm2d`` it keeps ``weight`` and ``bias`` as (frozen)
    parameters, the very same tensors as the layer it replaces, so parameter counts and optimizer
    state are unaffected, and ``unfreeze`` can put the original layer back.
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
        # Kept (never updated) so state_dict has the plain layer's keys: a checkpoint of the
        # unfrozen model loads strictly, and this one loads into an unfrozen model.
        if bn.num_batches_tracked is not None:
            self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        # Kept out of the module registry so it shows neither in the tree nor in state_dict.
        object.__setattr__(self, "_original", bn)

    @property
    def original(self) -> _BatchNorm:
        """The BatchNorm layer this one replaced (restored by ``unfreeze``)."""
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


# The per-layer helpers below take a module the caller already has (from iter_batchnorms or a
# checked public argument): they do not re-validate it, so one public call validates once.


def is_batchnorm(module: nn.Module) -> bool:
    """True for torch BatchNorm layers (1d/2d/3d, SyncBatchNorm) and :class:`FrozenBatchNorm`."""
    return isinstance(module, (_BatchNorm, FrozenBatchNorm))


def bn_state(module: nn.Module) -> BnPolicy:
    """How a BatchNorm layer currently treats its statistics: "frozen", "eval" or "train"."""
    if isinstance(module, FrozenBatchNorm) or isinstance(
        module.__dict__.get("train"), _FrozenInPlace
    ):
        return "frozen"
    if isinstance(module.__dict__.get("train"), _StayInEval):
        return "eval"
    return "train"


def release_bn(module: nn.Module) -> nn.Module:
    """Undo any policy on a BatchNorm layer; returns the module that should sit in the model."""
    if isinstance(module, FrozenBatchNorm):
        module = module.original
    if isinstance(module.__dict__.get("train"), _StayInEval):
        del module.__dict__["train"]
    return module


def bn_is_frozen(module: nn.Module) -> bool:
    """A BatchNorm counts as frozen when all its parameters are (or, without any, by policy)."""
    params = list(module.parameters())
    if params:
        return not any(p.requires_grad for p in params)
    return bn_state(module) != "train"


# Frozen BatchNorm classes of timm and torchvision: weight and bias become buffers.
_PEER_FROZEN_NAMES = ("FrozenBatchNorm2d", "FrozenBatchNormAct2d")


def peer_frozen_bn(module: nn.Module) -> bool:
    """True for a parameterless frozen BatchNorm a peer put in (``timm.utils.freeze``)."""
    return type(module).__name__ in _PEER_FROZEN_NAMES and next(module.parameters(), None) is None


def peer_policy(module: nn.Module) -> BnPolicy | None:
    """The policy a BatchNorm frozen by a peer behaves like, or None if it is not one.

    timm's ``FrozenBatchNorm2d`` is "frozen". Lightning's ``BaseFinetuning.freeze(train_bn=False)``
    freezes the parameters and sets ``track_running_stats=False`` (statistics never update) while
    leaving the layer in train mode: the nearest policy is "eval" (fixed statistics), though
    Lightning normalises a train-mode batch with its own statistics.
    """
    if peer_frozen_bn(module):
        return "frozen"
    params = list(module.parameters())
    lightning_frozen = (
        isinstance(module, _BatchNorm)
        and not module.track_running_stats
        and module.running_mean is not None
        and bool(params)
        and not any(p.requires_grad for p in params)
        and bn_state(module) == "train"
    )
    return "eval" if lightning_frozen else None


def iter_batchnorms(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every BatchNorm layer (including swapped :class:`FrozenBatchNorm`) with its path."""
    require_module(model)
    for name, mod in model.named_modules():
        if is_batchnorm(mod):
            yield name, mod


def check_bn_policy_fits(bns: Mapping[str, nn.Module], bn: BnPolicy) -> None:
    """Raise before any change if ``bn`` cannot be applied to every layer of ``bns``.

    Raises:
        TypeError / ValueError: ``bn`` is not a policy.
        ValueError: ``bn="frozen"`` for a layer without running statistics, or for a
            BatchNorm passed as the model itself (it has no parent to swap it in).
    """
    if check_bn_policy(bn) != "frozen":
        return
    root = bns.get("")
    if root is not None and swaps_when_frozen(root):
        raise ValueError(
            f'the model itself is a {type(root).__name__}: bn="frozen" replaces a BatchNorm '
            "with a FrozenBatchNorm inside its parent, and the layer you passed has none. Use "
            'bn="eval" (statistics fixed in place), FrozenBatchNorm(layer) for a frozen copy, '
            "or freeze the model that contains it"
        )
    for path, mod in bns.items():
        if isinstance(mod, _BatchNorm) and mod.running_mean is None:
            raise ValueError(
                f"{path} ({type(mod).__name__}) has no running statistics "
                '(track_running_stats=False), so it cannot be a FrozenBatchNorm; use bn="eval"'
            )


def apply_bn_policy(
    model: nn.Module, bns: Mapping[str, nn.Module], *, frozen: bool, bn: BnPolicy
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Give each layer of ``bns`` the policy its parameters call for (validate first).

    A layer gets ``bn`` only when ``frozen`` and all its parameters are frozen (one tied to
    something still trainable keeps training); otherwise it is released to train. A layer held
    under several names is handled once, and a swap replaces it under every name, so no name
    keeps the old layer with moving statistics.

    Returns:
        ``(path, before, after)`` per layer that changed, and the paths whose module was swapped.
    """
    changes: list[tuple[str, str, str]] = []
    replaced: list[str] = []
    done: set[int] = set()
    aliases: dict[int, list[str]] | None = None
    for path, mod in bns.items():
        if id(mod) in done:
            continue
        done.add(id(mod))
        before = bn_state(mod)
        all_frozen = not any(p.requires_grad for p in mod.parameters())
        target = bn if (frozen and all_frozen) else "train"
        if target == "train" and isinstance(mod, _BatchNorm) and mod.running_mean is not None:
            mod.track_running_stats = True  # Lightning's freeze turned it off; training restarts
        if before == target:
            continue
        new = _with_policy(model, path, release_bn(mod), target)
        if new is not mod:
            aliases = _module_paths(model) if aliases is None else aliases
            for alias in aliases.get(id(mod), [path]):
                set_submodule(model, alias, new)
                replaced.append(alias)
        changes.append((path, before, target))
    return changes, replaced


def _with_policy(model: nn.Module, path: str, released: nn.Module, target: str) -> nn.Module:
    """``released`` (a layer with no policy) given ``target``; a new module for a swap."""
    if target == "frozen" and swaps_when_frozen(released):
        assert isinstance(released, _BatchNorm)
        return FrozenBatchNorm(released)
    if target in ("eval", "frozen"):
        released.eval()
        keep = _FrozenInPlace if target == "frozen" else _StayInEval
        object.__setattr__(released, "train", keep(released))
    else:
        released.train(_parent_training(model, path))
    return released


def _module_paths(model: nn.Module) -> dict[int, list[str]]:
    """Every path under which each module is registered (a shared module has several)."""
    paths: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(mod), []).append(name)
    return paths


def _parent_training(model: nn.Module, path: str) -> bool:
    parent = parent_path(path)
    return (model.get_submodule(parent) if parent else model).training


def set_bn_policy(model: nn.Module, bn: BnPolicy) -> FreezeChange:
    """Re-apply a BatchNorm policy to every frozen BatchNorm layer of ``model``, in place.

    Raises:
        TypeError / ValueError: ``bn`` is not a policy, or cannot apply; the model is unchanged.
    """
    require_eager_module(model)
    frozen = {path: mod for path, mod in iter_batchnorms(model) if path and bn_is_frozen(mod)}
    check_bn_policy_fits(frozen, bn)
    changes, replaced = apply_bn_policy(model, frozen, frozen=True, bn=bn)
    return FreezeChange(batchnorm=tuple(changes), replaced=tuple(replaced))
