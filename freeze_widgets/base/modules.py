"""Module plumbing: set a submodule by path, save and restore training flags, signatures."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

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


# Spatial/temporal sizes of the example input per convolution rank (conv1d: a sequence, conv3d:
# a short clip); an image's side comes from the model when it says (see model_image_size).
_CONV_EXTENT = {nn.Conv1d: (128,), nn.Conv3d: (8, 64, 64)}


def model_image_size(model: nn.Module) -> int | None:
    """The input side a model declares: timm's ``pretrained_cfg``, a transformers config."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)):
        return int(cfg["input_size"][-1])
    size = getattr(getattr(model, "config", None), "image_size", None)
    if isinstance(size, (tuple, list)) and size:
        size = size[-1]
    return int(size) if isinstance(size, int) and size > 0 else None


def default_input_shape(
    model: nn.Module, *, batch: int = 2, image_size: int | None = None
) -> tuple[int, ...] | None:
    """The one default example-input rule: the shape the model's first weighted layer takes.

    The first module that holds parameters decides: a ``Conv2d`` gets images of side
    ``image_size`` (else the model's declared size, else 224), ``Conv1d``/``Conv3d`` a sequence
    or a clip, a ``Linear`` a feature vector. Anything else (an ``Embedding`` wants token ids)
    has no default: None. The batch defaults to 2 because exporters specialise size-1 dims.
    """
    first = next((m for m in model.modules() if next(m.parameters(False), None) is not None), None)
    if isinstance(first, nn.Conv2d):
        side = image_size or model_image_size(model) or 224
        return (batch, first.in_channels, side, side)
    if isinstance(first, (nn.Conv1d, nn.Conv3d)):
        return (batch, first.in_channels, *_CONV_EXTENT[type(first)])
    if isinstance(first, nn.Linear):
        return (batch, first.in_features)
    return None
