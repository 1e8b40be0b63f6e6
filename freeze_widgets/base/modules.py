"""Module plumbing: set a submodule by path, save and restore training flags, signatures,
and the element count a parameter stands for."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


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


def param_numel(p: torch.Tensor) -> int:
    """The elements a parameter stands for, as PEFT and transformers count them.

    A bitsandbytes 4-bit weight (``Params4bit``) stores two values per byte of its packed
    storage, so its ``numel()`` is a fraction of the layer's real size.
    """
    n = p.numel()
    if type(p).__name__ == "Params4bit":  # matched by name: bitsandbytes is optional
        return n * 2 * p.element_size()
    return n
