"""Targets given as module objects or nested lists (Lightning's style), turned into paths."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def target_paths(model: nn.Module, targets: Iterable[object]) -> list[object]:
    """``targets`` flattened, each module object replaced by its path in ``model``.

    Strings pass through (they are resolved later); lists and tuples nest to any depth, as in
    ``BaseFinetuning.freeze([model.backbone, [model.neck, model.head]])``. A module registered
    under several names is taken at its first. A ``ModuleList`` / ``ModuleDict`` / ``Sequential``
    is one target (its path), like any module.

    Raises:
        ValueError: a module object that is not part of ``model``.
    """
    out: list[object] = []
    paths: dict[int, str] | None = None
    stack: list[object] = [list(targets)]
    flat: list[object] = []
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    for item in flat:
        if isinstance(item, nn.Module):
            if paths is None:
                paths = {}
                for name, mod in model.named_modules(remove_duplicate=False):
                    paths.setdefault(id(mod), name)
            if id(item) not in paths:
                raise ValueError(
                    f"the {type(item).__name__} passed as a target is not part of this model "
                    "(a copy, or a module of another model?); pass a module of the model "
                    "itself or its dotted path"
                )
            out.append(paths[id(item)])
        else:
            out.append(item)
    return out
