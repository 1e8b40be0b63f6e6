"""One training-mode forward on a meta-device copy: saved-for-backward bytes and per-module MACs.

The copy shares no storage with the model (its tensors are created empty on the meta device, so
nothing is copied and nothing in the real model can change: no BatchNorm statistics update,
docs/design.md, trap 7). Autograd's ``saved_tensors_hooks`` see exactly what a real training
step would keep for backward under the copy's ``requires_grad`` flags.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Inputs = torch.Tensor | tuple[Any, ...] | list[Any] | dict[str, Any]


def meta_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are empty meta tensors.

    Floating tensors take ``dtype``; flags (``requires_grad``, ``training``) are copied.
    """
    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        target = dtype if t.is_floating_point() else t.dtype
        empty = torch.empty(t.shape, dtype=target, device="meta")
        if isinstance(t, nn.Parameter):
            memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad)
        else:
            memo[id(t)] = empty
    return copy.deepcopy(model, memo)


def to_meta(value: Any, dtype: torch.dtype) -> Any:
    """Example inputs with every tensor replaced by a meta tensor (floating ones in ``dtype``)."""
    if isinstance(value, torch.Tensor):
        target = dtype if value.is_floating_point() else value.dtype
        return torch.empty(value.shape, dtype=target, device="meta")
    if isinstance(value, (tuple, list)):
        return type(value)(to_meta(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: to_meta(v, dtype) for k, v in value.items()}
    return value


def call(model: nn.Module, inputs: Inputs) -> Any:
    """Call with a tensor, positional tuple/list, or keyword dict (transformers wants keywords)."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def saved_bytes(model: nn.Module, inputs: Inputs) -> int:
    """Bytes autograd keeps for backward in one forward of ``model`` (its params excluded).

    Each tensor is counted once, by its base (a view of an already-saved tensor is free).
    Works on any device; on meta nothing is allocated.
    """
    own = {id(t) for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, torch.Tensor] = {}  # keeps saved tensors alive so their ids stay unique

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in own and id(t) not in own:
            seen.setdefault(id(base), base)
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        call(model, inputs)
    return sum(_nbytes(t) for t in seen.values())


@dataclass(frozen=True)
class ModuleMacs:
    """Multiply-accumulates of one Linear/Conv module in one forward, in execution order."""

    path: str
    module: nn.Module
    macs: int


def _macs_of(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        return out.numel() * (module.in_channels // module.groups) * kernel
    return 0


def module_macs(model: nn.Module, inputs: Inputs) -> list[ModuleMacs]:
    """Per Linear/Conv call, in the order they run (a module called twice appears twice)."""
    names = {m: n for n, m in model.named_modules()}
    calls: list[ModuleMacs] = []

    def hook_for(path: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                calls.append(ModuleMacs(path, module, _macs_of(module, out)))

        return hook

    handles = [
        m.register_forward_hook(hook_for(names[m]))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with torch.no_grad():
            call(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return calls
