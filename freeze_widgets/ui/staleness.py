"""Has the model changed under the explorer? Noticed on the next action, cheaply.

A notebook user may replace a layer in another cell (``m.fc = nn.Linear(512, 3)``,
``m.layer4 = nn.Identity()``) after the tree was built; a tick must then not act on rows that
are no longer in the model. The full answer is a key of every module and parameter by path
(:func:`structure_key`), a walk of the whole model: about 15 ms at 5,000 modules, too slow to
take before every tick. :class:`StructureWatch` therefore listens to PyTorch's global
registration hooks (every ``module.x = ...`` of a module, parameter or buffer goes through
them) and takes the full key only after a registration on one of the model's own modules, or
always for models small enough that the walk costs about a millisecond.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules import module as torch_module

__all__ = ["ModelChanged", "StructureWatch", "structure_key"]

# Up to this many modules the full key is taken before every action (about a millisecond), which
# also catches what the hooks cannot see (``del model.fc``, edits of ``model._modules``).
FULL_CHECK_MODULES = 1_000


class ModelChanged(RuntimeError):
    """The model's modules or parameters were replaced since the tree was built."""


def structure_key(model: nn.Module) -> int:
    """A hash of which module and which parameter object sits at each path."""
    modules = tuple((name, id(m)) for name, m in model.named_modules(remove_duplicate=False))
    params = tuple((name, id(p)) for name, p in model.named_parameters(remove_duplicate=False))
    return hash((modules, params))


class StructureWatch:
    """The model's structure key, and whether anything was registered on its modules since."""

    def __init__(self, model: nn.Module) -> None:
        self.key = 0
        self._ids: set[int] = set()
        self._touched = False
        self._handles = [
            torch_module.register_module_module_registration_hook(self._on_register),
            torch_module.register_module_parameter_registration_hook(self._on_register),
            torch_module.register_module_buffer_registration_hook(self._on_register),
        ]
        self.reset(model)

    def reset(self, model: nn.Module) -> None:
        """Take the model as it is now as the known structure (after building or our changes)."""
        self._ids = {id(m) for m in model.modules()}
        self.key = structure_key(model)
        self._touched = False

    def acknowledge(self, model: nn.Module) -> None:
        """The explorer's own change (a BatchNorm swap registers modules): take it as known.

        Only a change that registered something needs the walk; a plain tick costs nothing.
        """
        if self._touched:
            self.reset(model)

    def changed(self, model: nn.Module) -> bool:
        """True when the model's structure differs from the last :meth:`reset`."""
        if not self._touched and len(self._ids) > FULL_CHECK_MODULES:
            return False
        return structure_key(model) != self.key

    def close(self) -> None:
        """Remove the global hooks (the explorer closes)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _on_register(self, module: nn.Module, _name: str, _value: Any) -> None:
        if id(module) in self._ids:
            self._touched = True
