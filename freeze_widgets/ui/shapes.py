"""Each module's output shape for an example batch, from a meta-device forward (no compute).

What torchinfo shows beside each layer, without running the real model: a copy whose tensors
live on the meta device takes a batch of the shape the model's first layer implies (batch 2),
and forward hooks on the copy record what each module returns. A model that cannot run so (it
needs real values, or its input is not a float tensor) gets no shapes, and nothing else changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from freeze_widgets.cost.meta_forward import meta_copy
from freeze_widgets.ui.export_args import default_input_shape

__all__ = ["MAX_MODULES", "ShapeCache", "output_shapes"]

MAX_MODULES = 3000  # beyond this the explorer's first paint matters more than the shapes


def _first_shape(output: Any) -> tuple[int, ...] | None:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)) and output:
        return _first_shape(output[0])
    return None


def output_shapes(
    model: nn.Module, input_shape: tuple[int, ...] | None = None
) -> dict[str, tuple[int, ...]]:
    """Module path -> the shape of its (first) output tensor; ``{}`` when it cannot be told.

    Args:
        model: The model (left untouched: the forward runs on a meta-device copy).
        input_shape: The example batch's shape; default: what the first layer implies.
    """
    modules = list(model.named_modules())
    if len(modules) > MAX_MODULES:
        return {}
    shape = input_shape or default_input_shape(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    shapes: dict[str, tuple[int, ...] | None] = {}
    try:
        copy = meta_copy(model, dtype)
        copy.eval()  # no BatchNorm batch statistics on meta; shapes are the same
        for name, module in copy.named_modules():
            module.register_forward_hook(
                lambda _m, _i, out, name=name: shapes.__setitem__(name, _first_shape(out))
            )
        with torch.no_grad():
            copy(torch.empty(shape, dtype=dtype, device="meta"))
    except Exception:  # needs real values or other inputs: no shapes, as before
        return {}
    return {k: v for k, v in shapes.items() if v is not None}


class ShapeCache:
    """The last shapes, recomputed only when the model's structure key changes (a tick does
    not change shapes; re-reading the view after an error should not pay for them again)."""

    def __init__(self) -> None:
        self._key: int | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}

    def get(self, model: nn.Module, key: int) -> dict[str, tuple[int, ...]]:
        if key != self._key:
            self._shapes, self._key = output_shapes(model), key
        return self._shapes
