"""One training-mode forward on a meta-device copy: saved and peak activation bytes, and MACs.

The copy shares no storage with the model (its tensors are created empty on the meta device, so
nothing is copied and nothing in the real model can change: no BatchNorm statistics update,
docs/design.md, trap 7). Autograd's ``saved_tensors_hooks`` see exactly what a real training
step would keep for backward under the copy's ``requires_grad`` flags; a dispatch mode sees
every tensor the forward creates and when it is freed, which gives the forward's peak.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

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


@dataclass(frozen=True)
class ForwardMemory:
    """Activation memory of one training-mode forward, in bytes.

    Attributes:
        saved: What autograd keeps for backward (each base tensor once; parameters and
            buffers excluded).
        peak: The most activation memory alive at one moment of the forward: what was saved
            so far plus the feature maps still alive though nothing keeps them for backward
            (a layer's input and output at once, a residual branch's identity). Never below
            ``saved``, since everything saved is alive when the forward ends.
    """

    saved: int
    peak: int


class _LiveBytes(TorchDispatchMode):
    """Counts the storages the forward's ops create, from creation until they are freed.

    Storages are tracked, not tensors, so views cost nothing; an output that aliases an input
    (a view, an in-place op) is the input's storage and is skipped by its schema. A weakref
    finalizer on each storage subtracts it when autograd and Python both let go of it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for spec, t in zip(func._schema.returns, outs, strict=False):
            if isinstance(t, torch.Tensor) and spec.alias_info is None:
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.now += self.live[key]
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key)


def forward_memory(model: nn.Module, inputs: Inputs) -> ForwardMemory:
    """Saved-for-backward and peak activation bytes of one forward of ``model``.

    Both come from the same forward: ``saved_tensors_hooks`` see what backward keeps, a
    dispatch mode sees every tensor the ops create and when it is freed. Saved tensors the
    forward did not create (the inputs) are added to the peak as alive throughout. Works on
    any device; on meta nothing is allocated.
    """
    own = {id(t) for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, torch.Tensor] = {}  # keeps saved tensors alive so their ids stay unique

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in own and id(t) not in own:
            seen.setdefault(id(base), base)
        return t

    tracker = _LiveBytes()
    with (
        torch.enable_grad(),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        tracker,
    ):
        out = call(model, inputs)
    del out
    saved = sum(_nbytes(t) for t in seen.values())
    # Everything saved is still alive, so a saved storage the forward made is still tracked.
    external = sum(_nbytes(t) for t in seen.values() if id(t.untyped_storage()) not in tracker.live)
    return ForwardMemory(saved, max(saved, tracker.peak + external))


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
