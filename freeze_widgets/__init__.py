"""freeze_widgets: see and control which parts of a PyTorch model train.

The core (counting, freezing, training, export) is plain PyTorch and works in scripts; the
Jupyter explorer is a thin layer on top (``FreezeExplorer``, imported lazily).
"""

from __future__ import annotations

from typing import Any

from .freezing import FreezeChange, FreezeSpec, FrozenBatchNorm, freeze, freeze_to, unfreeze
from .models import PretrainedWeightsUnavailable, load_model, weights_source
from .tree import ModuleTree, Node, ParamCounts, count_parameters

__version__ = "0.1.0"

__all__ = [
    "FreezeChange",
    "FreezeExplorer",
    "FreezeSpec",
    "FrozenBatchNorm",
    "ModuleTree",
    "Node",
    "ParamCounts",
    "PretrainedWeightsUnavailable",
    "count_parameters",
    "explore",
    "freeze",
    "freeze_to",
    "load_model",
    "unfreeze",
    "weights_source",
]

# Heavy or optional parts load on first use so `import freeze_widgets` stays fast.
_LAZY: dict[str, str] = {"FreezeExplorer": ".ui", "explore": ".ui"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'freeze_widgets' has no attribute {name!r}")
