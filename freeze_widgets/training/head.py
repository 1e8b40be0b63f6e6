"""The classification head (find it, replace it for a new class count) and the optimizer table."""

from __future__ import annotations

import torch
from torch import nn

from freeze_widgets.base.modules import set_submodule

__all__ = [
    "find_head",
    "new_head",
    "replace_head",
    "trainable_parameters",
]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` (tied ones once)."""
    return [p for p in model.parameters() if p.requires_grad]


def find_head(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The classification head: ``fc``, the last Linear in ``classifier``/``head(s)``, or the
    last ``nn.Linear`` anywhere in the model. None if the model has no Linear layer."""
    for attr in ("fc", "classifier", "head", "heads"):
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Linear):
            return attr, mod
        if isinstance(mod, nn.Module):
            linears = [(n, m) for n, m in mod.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                name, lin = linears[-1]
                return f"{attr}.{name}", lin
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def new_head(model: nn.Module, num_classes: int, seed: int) -> tuple[str, nn.Linear] | None:
    """The head's path and a fresh ``nn.Linear`` with ``num_classes`` outputs (model untouched).

    The new layer is seeded with ``seed`` (the global RNG is left as it was, so every rank of a
    distributed run builds the same one), and placed on the old head's device and dtype, in its
    mode.

    Returns:
        ``(path, layer)``, or None if the head already has ``num_classes`` outputs.

    Raises:
        ValueError: the model has no ``nn.Linear`` to replace.
    """
    found = find_head(model)
    if found is None:
        raise ValueError(
            f"num_classes={num_classes} but the model has no nn.Linear head to replace; "
            "give a model whose output already has that many classes"
        )
    path, old = found
    if old.out_features == num_classes:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    new.train(old.training)
    return path, new


def replace_head(model: nn.Module, num_classes: int, seed: int) -> str | None:
    """Swap the head for :func:`new_head`'s fresh trainable ``nn.Linear``, in place.

    Returns:
        A sentence saying what was replaced, or None if the head already had ``num_classes``.

    Raises:
        ValueError: the model has no ``nn.Linear`` to replace.
    """
    found = new_head(model, num_classes, seed)
    if found is None:
        return None
    path, new = found
    old = model.get_submodule(path)  # the nn.Linear new_head found
    set_submodule(model, path, new)
    return (
        f"{path}: Linear({old.in_features}->{old.out_features}) replaced by "
        f"Linear({new.in_features}->{num_classes})"
    )
