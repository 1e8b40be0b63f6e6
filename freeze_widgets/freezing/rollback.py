"""All or nothing: a freezing change that raises part-way leaves the model exactly as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from torch import nn

from freeze_widgets.freezing.bn import FrozenBatchNorm

__all__ = ["all_or_nothing", "change_scope"]


@contextlib.contextmanager
def all_or_nothing(
    model: nn.Module,
    params: Iterable[nn.Parameter] | None = None,
    modules: Iterable[nn.Module] | None = None,
) -> Iterator[None]:
    """Run a change; if it raises, put ``model`` back exactly as it was, then re-raise.

    Restores each parameter's ``requires_grad`` and ``.grad``, and each module's registered
    children (undoing swaps), ``training`` flag and ``train`` override (BatchNorm policies).
    Validation comes first everywhere; this is the second line for failures part-way.

    Args:
        model: The model being changed.
        params: The parameters the change may touch (default: all of them).
        modules: The modules the change may touch (default: all of them; a swap touches
            the parents of every name of the swapped layer, so pass None when one may happen).
    """
    saved_params = [
        (p, p.requires_grad, p.grad) for p in (model.parameters() if params is None else params)
    ]
    saved_modules = [
        (m, dict(m._modules), m.training, m.__dict__.get("train"))
        for m in (model.modules() if modules is None else modules)
    ]
    try:
        yield
    except BaseException:
        for m, children, training, train in saved_modules:
            m._modules.clear()
            m._modules.update(children)
            m.training = training
            m.__dict__.pop("train", None)
            if train is not None:
                object.__setattr__(m, "train", train)
        for p, requires_grad, grad in saved_params:
            p.requires_grad_(requires_grad)
            p.grad = grad
        raise


def change_scope(
    params: list[nn.Parameter], bns: Iterable[nn.Module], *, may_swap: bool
) -> tuple[list[nn.Parameter], list[nn.Module] | None]:
    """What a change of ``params`` and ``bns`` can touch, so a tick snapshots only that."""
    layers = [sub for m in bns for sub in m.modules()]  # BatchNormAct2d has act/drop inside
    touched = params + [p for m in layers for p in m.parameters(recurse=False)]
    if may_swap or any(isinstance(m, FrozenBatchNorm) for m in layers):
        return touched, None
    return touched, layers
