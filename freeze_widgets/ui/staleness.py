"""Has the model changed under the explorer? A cheap key of its modules and parameters.

A notebook user may replace a layer in another cell (``m.fc = nn.Linear(512, 3)``,
``m.layer4 = nn.Identity()``) after the tree was built; a tick must then not act on rows that
are no longer in the model. The key is the identity of every module and parameter by path:
about a millisecond for a thousand modules, so it is checked before every model change.
"""

from __future__ import annotations

from torch import nn

__all__ = ["ModelChanged", "structure_key"]


class ModelChanged(RuntimeError):
    """The model's modules or parameters were replaced since the tree was built."""


def structure_key(model: nn.Module) -> int:
    """A hash of which module and which parameter object sits at each path."""
    modules = tuple((name, id(m)) for name, m in model.named_modules(remove_duplicate=False))
    params = tuple((name, id(p)) for name, p in model.named_parameters(remove_duplicate=False))
    return hash((modules, params))
