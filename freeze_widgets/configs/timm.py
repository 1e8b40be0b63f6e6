"""timm's ``timm.utils.freeze(root, submodules, include_bn_running_stats)`` (``utils/model.py``).

``submodules`` are exact module paths (``get_submodule``; no parameters, no patterns); an empty
list means the whole model. Every parameter under them is frozen; with
``include_bn_running_stats`` (the default) each ``BatchNorm2d`` / ``SyncBatchNorm`` /
``BatchNormAct2d`` under them becomes a ``FrozenBatchNorm2d`` whose weight and bias are buffers
(``BatchNorm1d`` is not converted). A BatchNorm layer as the root is refused by timm.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from freeze_widgets.base.checks import BnPolicy
from freeze_widgets.configs._common import (
    GradMap,
    InexpressibleError,
    check_keys,
    difference_text,
    get_typed,
    string_list,
)
from freeze_widgets.freezing.spec import covering_paths

KEYS = {
    "submodules": "module paths to freeze (empty: the whole model)",
    "include_bn_running_stats": "bool: BatchNorm2d under them becomes FrozenBatchNorm2d",
}


def grad_map(config: dict[str, Any], model: nn.Module) -> tuple[GradMap, list[str]]:
    """What ``timm.utils.freeze(model, **config)`` leaves trainable on a fully trainable model."""
    check_keys(config, KEYS, "timm")
    paths = string_list(config, "submodules")
    get_typed(config, "include_bn_running_stats", (bool,), True)
    if isinstance(model, _BatchNorm):
        raise ValueError("timm refuses a BatchNorm layer as the root module")
    frozen: set[int] = set()
    for path in paths or [""]:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(
                f"timm: {path!r} is not a module of this model (timm.utils.freeze takes module "
                "paths from named_modules(), not parameters or patterns)"
            ) from None
        frozen.update(id(p) for p in module.parameters())
    return {n: id(p) not in frozen for n, p in model.named_parameters()}, []


def bn_policy(config: dict[str, Any]) -> BnPolicy:
    return "frozen" if config.get("include_bn_running_stats", True) else "train"


def write(wanted: GradMap, model: nn.Module, bn: BnPolicy) -> dict[str, Any]:
    """``submodules`` freezing ``wanted``; a frozen parameter alone cannot be said to timm."""
    named = dict(model.named_parameters())
    frozen = {id(named[n]) for n, t in wanted.items() if not t}
    paths = covering_paths(model, lambda p: id(p) in frozen)
    config: dict[str, Any] = {"submodules": paths, "include_bn_running_stats": bn != "train"}
    if "" in paths:
        config["submodules"] = []
    params = [p for p in paths if p in named]
    if params:
        nearest = dict(config, submodules=[p for p in paths if p not in named])
        got, _ = grad_map(nearest, model)
        raise InexpressibleError(
            f"timm freezes whole modules only; the spec freezes single parameters "
            f"({', '.join(params[:3])}). Nearest config: {nearest}, which "
            f"{difference_text(wanted, got, model)}",
            nearest,
            difference_text(wanted, got, model),
        )
    if not frozen:
        raise InexpressibleError(
            "the spec freezes nothing, and timm.utils.freeze with no submodules freezes the "
            "whole model: simply do not call it",
            None,
            "",
        )
    return config
