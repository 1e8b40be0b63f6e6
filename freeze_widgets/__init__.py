"""freeze_widgets: see and control which parts of a PyTorch model train.

The core (counting, freezing, training, export) is plain PyTorch and works in scripts; the
Jupyter explorer is a thin layer on top (``FreezeExplorer``, imported lazily).
"""

from __future__ import annotations

from typing import Any

from freeze_widgets.checks.audit import audit_optimizer
from freeze_widgets.checks.findings import Finding
from freeze_widgets.cost.estimate import CostEstimate, CostModel, estimate_cost
from freeze_widgets.data.synthetic import synthetic_dataset
from freeze_widgets.distributed import DistributedRunError, check_distributed, finetune_distributed
from freeze_widgets.export import BoundModule, ExportReport, bind, export_onnx, export_torchscript
from freeze_widgets.freezing.bn import FrozenBatchNorm
from freeze_widgets.freezing.change import FreezeChange
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.freezing.targets import freeze, freeze_through, freeze_to, unfreeze
from freeze_widgets.models.vision import load_model
from freeze_widgets.models.weights import PretrainedWeightsUnavailable, weights_source
from freeze_widgets.run import finetune
from freeze_widgets.training import FineTuneReport, NonFiniteLossError
from freeze_widgets.training.param_groups import param_groups
from freeze_widgets.tree import ModuleTree, Node, ParamCounts, count_parameters
from freeze_widgets.verify.checkpoint import verify_checkpoint
from freeze_widgets.verify.guard import FreezeGuard, FrozenWeightMoved

__version__ = "0.1.0"

__all__ = [
    "BoundModule",
    "CostEstimate",
    "CostModel",
    "DistributedRunError",
    "ExportReport",
    "Finding",
    "FineTuneReport",
    "FreezeChange",
    "FreezeExplorer",
    "FreezeGuard",
    "FreezeSpec",
    "FrozenBatchNorm",
    "FrozenWeightMoved",
    "ModuleTree",
    "Node",
    "NonFiniteLossError",
    "ParamCounts",
    "PretrainedWeightsUnavailable",
    "audit_optimizer",
    "bind",
    "check_distributed",
    "count_parameters",
    "estimate_cost",
    "explore",
    "export_onnx",
    "export_torchscript",
    "finetune",
    "finetune_distributed",
    "freeze",
    "freeze_through",
    "freeze_to",
    "load_model",
    "param_groups",
    "show_netron",
    "synthetic_dataset",
    "unfreeze",
    "verify_checkpoint",
    "weights_source",
]

# Heavy or optional parts load on first use so `import freeze_widgets` stays fast.
# show_netron returns a widget, so it lives in the UI layer.
_LAZY: dict[str, str] = {
    "FreezeExplorer": ".ui",
    "explore": ".ui",
    "show_netron": ".ui.netron_view",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'freeze_widgets' has no attribute {name!r}")
