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


# Spatial/temporal sizes of the example input per convolution rank (conv1d: a sequence, conv3d:
# a short clip); an image's size comes from the model when it says (see model_input_size).
_CONV_EXTENT = {nn.Conv1d: (128,), nn.Conv3d: (8, 64, 64)}
# The layers that can take a model's input; the first of them in module order decides.
_INPUT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding, nn.EmbeddingBag)


def _int_pair(value: object) -> tuple[int, int] | None:
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return (value[0], value[1])
    return None


def model_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """``(channels, height, width)`` the model says it takes, or None.

    A timm patch embedding's ``img_size`` (``create_model(..., img_size=64)`` leaves
    ``pretrained_cfg`` at 224), timm's ``pretrained_cfg``/``default_cfg`` ``input_size``, or a
    transformers config's ``image_size`` and ``num_channels``.
    """
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if isinstance(size, (tuple, list)) and len(size) == 3 and all(isinstance(v, int) for v in size):
        patch = _int_pair(getattr(getattr(model, "patch_embed", None), "img_size", None))
        return (size[0], *(patch or (size[1], size[2])))
    config = getattr(model, "config", None)
    side = _int_pair(getattr(config, "image_size", None))
    channels = getattr(config, "num_channels", 3)
    return (channels, *side) if side is not None and isinstance(channels, int) else None


def default_input_shape(
    model: nn.Module, *, batch: int = 2, image_size: int | None = None
) -> tuple[int, ...] | None:
    """The one default example-input rule: the shape the model's first input layer takes.

    The first convolution, ``Linear`` or embedding in module order decides: a ``Conv2d`` gets
    images of side ``image_size``, else the model's declared size (:func:`model_input_size`),
    else 224; ``Conv1d``/``Conv3d`` a sequence or a clip; a ``Linear`` a feature vector. An
    embedding wants token ids, which have no default: None. The batch defaults to 2 because
    exporters specialise size-1 dims and a training-mode BatchNorm refuses a single value.
    """
    first = next((m for m in model.modules() if isinstance(m, _INPUT_LAYERS)), None)
    if isinstance(first, nn.Conv2d):
        declared = model_input_size(model)
        height, width = (image_size, image_size) if image_size else (declared or (0, 224, 224))[1:]
        return (batch, first.in_channels, height, width)
    if isinstance(first, (nn.Conv1d, nn.Conv3d)):
        return (batch, first.in_channels, *_CONV_EXTENT[type(first)])
    if isinstance(first, nn.Linear):
        return (batch, first.in_features)
    return None


def param_numel(p: torch.Tensor) -> int:
    """The elements a parameter stands for, as PEFT and transformers count them.

    A bitsandbytes 4-bit weight (``Params4bit``) stores two values per byte of its packed
    storage, so its ``numel()`` is a fraction of the layer's real size.
    """
    n = p.numel()
    if type(p).__name__ == "Params4bit":  # matched by name: bitsandbytes is optional
        return n * 2 * p.element_size()
    return n
