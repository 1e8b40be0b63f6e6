"""Argument checks at the public boundary: each raises a TypeError/ValueError naming it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

import torch
from torch import nn
from torch.nn.parameter import is_lazy

BnPolicy = Literal["eval", "frozen", "train"]
"""What happens to a frozen BatchNorm: kept in eval, swapped for FrozenBatchNorm, or training."""


BN_POLICIES: tuple[BnPolicy, ...] = get_args(BnPolicy)


def check_bn_policy(
    bn: object, *, argument: str = "bn", allow_none: bool = False
) -> BnPolicy | None:
    """Validate a BatchNorm policy argument before anything is changed.

    Raises:
        TypeError: ``bn`` is not a string (or None where allowed).
        ValueError: ``bn`` is a string but not one of the policies.
    """
    choices = ", ".join(repr(p) for p in BN_POLICIES) + (" or None" if allow_none else "")
    if bn is None and allow_none:
        return None
    if not isinstance(bn, str):
        raise TypeError(f"{argument} must be one of {choices}; got {type(bn).__name__} {bn!r}")
    if bn not in BN_POLICIES:
        raise ValueError(f"{argument} must be one of {choices}; got {bn!r}")
    return bn  # type: ignore[return-value]


def require_module(value: object, argument: str = "model") -> nn.Module:
    """``value`` as an ``nn.Module``, or a TypeError naming the argument."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{argument} must be a torch.nn.Module; got {type(value).__name__}")
    return value


def require_strings(values: Iterable[object], argument: str) -> list[str]:
    """``values`` as a list of strings, or a TypeError naming the argument and the bad item."""
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise TypeError(
                f"{argument} must be strings (dotted paths or glob patterns); "
                f"got {type(value).__name__} {value!r}"
            )
        out.append(value)
    return out


def require_eager_module(value: object, argument: str = "model") -> nn.Module:
    """``value`` as an eager (not TorchScript) ``nn.Module``, or a TypeError saying what to do.

    A scripted or traced module has no ``get_submodule``, and its BatchNorm layers can be
    neither swapped nor kept in eval, so a freeze could only half-apply; freezing the eager
    model first and scripting it afterwards keeps every ``requires_grad`` flag.
    """
    module = require_module(value, argument)
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError(
            f"{argument} is a TorchScript module ({type(module).__name__}); freezing needs the "
            "eager model: freeze it before torch.jit.script / torch.jit.trace (the scripted "
            "module keeps requires_grad), or set p.requires_grad_(False) on the scripted "
            "module's parameters yourself"
        )
    return module


def on_meta_device(model: nn.Module) -> bool:
    """True when any parameter or buffer is on the meta device (structure only, no values)."""
    return any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def meta_device_message(action: str) -> str:
    """Why ``action`` cannot run on a structure-only model, and how to get one with weights."""
    return (
        f"cannot {action} a model on the meta device: it has a structure but no weights. "
        "Load it with weights (load_model(name) without device='meta'), or materialize it "
        "with model.to_empty(device='cpu') and then model.load_state_dict(...)."
    )


def require_materialized(model: nn.Module, action: str) -> None:
    """A clear ValueError for a structure-only (meta device) model, before anything else."""
    if on_meta_device(model):
        raise ValueError(meta_device_message(action))


def require_initialized(model: nn.Module, action: str) -> None:
    """A clear ValueError for parameters a Lazy module has not created yet (no size to count).

    PyTorch's own error ("Attempted to use an uninitialized parameter") names neither the
    parameter nor the way out.
    """
    lazy = [name for name, p in model.named_parameters() if is_lazy(p)]
    if lazy:
        names = ", ".join(repr(n) for n in lazy[:3]) + (" ..." if len(lazy) > 3 else "")
        raise ValueError(
            f"cannot {action}: {len(lazy)} parameter{'s' if len(lazy) > 1 else ''} ({names}) "
            "belong to Lazy modules not materialised yet, so their sizes are unknown. Run one "
            "forward pass with a real input (model(example_batch)) first"
        )
