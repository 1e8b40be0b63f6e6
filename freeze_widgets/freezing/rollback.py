"""All or nothing: a freezing change that raises part-way leaves the model exactly as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from freeze_widgets.freezing.bn import FrozenBatchNorm

__all__ = ["all_or_nothing", "change_scope"]


@contextlib.contextmanager
def all_or_nothing(
    model: nn.Module,
    params: Iterable[nn.Parameter] | None = None,
    modules: Iterable[nn.Module] | None = None,
    *,
    values: bool = False,
) -> Iterator[None]:
    """Run a change; if it raises, put ``model`` back exactly as it was, then re-raise.

    Restores each parameter's ``requires_grad`` and ``.grad``, and each module's registered
    children (undoing swaps), parameters and buffers (undoing replacements), ``training`` flag
    and ``train`` override (BatchNorm policies). With ``values=True`` (a fine-tune) it also
    keeps a copy of every parameter and buffer and writes it back bit for bit, so trained
    weights and BatchNorm statistics a failed run touched are undone too.
    Validation comes first everywhere; this is the second line for failures part-way.

    Args:
        model: The model being changed.
        params: The parameters the change may touch (default: all of them).
        modules: The modules the change may touch (default: all of them; a swap touches
            the parents of every name of the swapped layer, so pass None when one may happen).
        values: Also restore every parameter's and buffer's values (costs one copy of them).
    """
    saved_params = [
        (p, p.requires_grad, p.grad) for p in (model.parameters() if params is None else params)
    ]
    saved_modules = [
        (
            m,
            dict(m._modules),
            dict(m._parameters),
            dict(m._buffers),
            m.training,
            m.__dict__.get("train"),
        )
        for m in (model.modules() if modules is None else modules)
    ]
    saved_values = _copy_values(model) if values else []
    try:
        yield
    except BaseException:
        for m, children, parameters, buffers, training, train in saved_modules:
            for registry, saved in (
                (m._modules, children),
                (m._parameters, parameters),
                (m._buffers, buffers),
            ):
                registry.clear()
                registry.update(saved)  # type: ignore[arg-type]
            m.training = training
            m.__dict__.pop("train", None)
            if train is not None:
                object.__setattr__(m, "train", train)
        for p, requires_grad, grad in saved_params:
            p.requires_grad_(requires_grad)
            p.grad = grad
        _write_back(saved_values)
        raise


def _copy_values(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each distinct parameter and buffer with a copy of its value (lazy/meta ones have none)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return [
        (t, t.detach().clone())
        for t in tensors.values()
        if not is_lazy(t) and t.device.type != "meta"
    ]


def _write_back(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put each saved value back into its own tensor (same storage: tied views stay tied)."""
    with torch.no_grad():
        for tensor, value in saved:
            if tensor.shape == value.shape and tensor.dtype == value.dtype:
                tensor.copy_(value)
            else:  # resized in place by the failed run
                tensor.data = value


def change_scope(
    params: list[nn.Parameter], bns: Iterable[nn.Module], *, may_swap: bool
) -> tuple[list[nn.Parameter], list[nn.Module] | None]:
    """What a change of ``params`` and ``bns`` can touch, so a tick snapshots only that."""
    layers = [sub for m in bns for sub in m.modules()]  # BatchNormAct2d has act/drop inside
    touched = params + [p for m in layers for p in m.parameters(recurse=False)]
    if may_swap or any(isinstance(m, FrozenBatchNorm) for m in layers):
        return touched, None
    return touched, layers
