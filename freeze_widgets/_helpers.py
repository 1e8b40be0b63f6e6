"""Small helpers shared by the core modules (one home for logic that was written several times).

Nothing here is public API; every function is pure PyTorch / standard library.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

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


def close_matches(target: str, candidates: Sequence[str], *, cutoff: float = 0.5) -> list[str]:
    """Up to five candidates that look like ``target`` (typos, or the same last path component)."""
    close = difflib.get_close_matches(target, list(candidates), n=5, cutoff=cutoff)
    if not close:
        last = target.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == last][:5]
    return close


def unknown_name_error(
    what: str, name: str, candidates: Sequence[str], *, way_out: str = "", cutoff: float = 0.5
) -> ValueError:
    """A ValueError naming the unknown ``name``, its close matches, and how to find valid ones."""
    close = close_matches(name, candidates, cutoff=cutoff)
    hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
    tail = f" {way_out}" if way_out else ""
    return ValueError(f"Unknown {what} {name!r}.{hint}{tail}")


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (``"layer1.0.bn1"``) with ``module``."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def parent_path(path: str) -> str:
    """The dotted path of a module's parent ("" for a top-level child)."""
    return path.rpartition(".")[0]


def module_modes(model: nn.Module) -> dict[nn.Module, bool]:
    """Each submodule's own ``training`` flag (a ``.train()`` call would overwrite them all)."""
    return {m: m.training for m in model.modules()}


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    """Set each module's flag back directly (``.train()`` recurses and would undo BN policies)."""
    for module, mode in modes.items():
        module.training = mode


@contextlib.contextmanager
def preserved_modes(model: nn.Module, *, eval_inside: bool = False) -> Iterator[None]:
    """Run a block and put every submodule's ``training`` flag back as it was.

    Args:
        model: The module whose submodules' flags are saved.
        eval_inside: Put the whole model in eval mode for the block.

    Restoring per module (not ``model.train(was_training)``) keeps a frozen BatchNorm that sits in
    eval inside a training model in eval (docs/design.md, trap 1).
    """
    modes = module_modes(model)
    if eval_inside:
        model.eval()
    try:
        yield
    finally:
        restore_modes(modes)


def is_variadic(parameter: inspect.Parameter) -> bool:
    """True for ``*args`` / ``**kwargs`` parameters."""
    return parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def named_parameters_of(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """The named (not ``*args`` / ``**kwargs``) parameters of ``fn``'s signature, in order."""
    return [p for p in inspect.signature(fn).parameters.values() if not is_variadic(p)]


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
