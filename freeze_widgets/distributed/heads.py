"""Replacing a classifier head to fit the task's classes (seeded: the same on every rank)."""

from __future__ import annotations

import torch
from torch import nn

from .._helpers import set_submodule
from ..training import find_head

__all__ = ["new_head", "replace_head"]


def new_head(model: nn.Module, num_classes: int, seed: int) -> tuple[str, nn.Linear] | None:
    """The path and a fresh ``nn.Linear`` head when the current one has another output size.

    Raises:
        ValueError: the model has no ``nn.Linear`` head to replace.
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
        head = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    head.to(device=old.weight.device, dtype=old.weight.dtype)
    head.train(old.training)
    return path, head


def replace_head(model: nn.Module, num_classes: int, seed: int) -> str | None:
    """Swap in :func:`new_head` in place; returns a description, or None if nothing changed."""
    found = new_head(model, num_classes, seed)
    if found is None:
        return None
    path, head = found
    old = model.get_submodule(path)
    set_submodule(model, path, head)
    return f"{path}: {old} replaced by Linear({head.in_features}->{num_classes})"
