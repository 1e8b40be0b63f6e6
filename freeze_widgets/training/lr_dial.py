"""The learning-rate dial as data: a multiplier per top-level group, per row, and as config.

The explorer's "lr ×" control sets one multiplier per top-level group (uniform, layer decay
with its factor, or discriminative from ``lo`` to 1), then single rows by hand; frozen rows
read 0. The multipliers are exact paths, so a :class:`FreezeSpec` saves them (``lr_mult``) and
:func:`param_groups` turns them into groups. :func:`lr_config` writes them for other tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from torch import nn

from freeze_widgets.base.checks import require_module
from freeze_widgets.base.wording import unknown_name_error
from freeze_widgets.freezing.lr_code import lr_groups_code
from freeze_widgets.freezing.targets import top_level_groups
from freeze_widgets.training.param_groups import (
    check_layer_decay,
    check_mults,
    check_rate,
    even_mults,
    mults_by_param,
)

__all__ = ["CONFIG_TARGETS", "DIAL_MODES", "dial_multipliers", "lr_config", "row_multipliers"]

DialMode = Literal["uniform", "layer_decay", "discriminative"]
DIAL_MODES: tuple[str, ...] = get_args(DialMode)
ConfigTarget = Literal["torch", "mmengine", "timm"]
CONFIG_TARGETS: tuple[str, ...] = get_args(ConfigTarget)


def dial_multipliers(
    model: nn.Module,
    mode: str = "uniform",
    *,
    factor: float = 0.75,
    lo: float = 0.01,
    edits: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Top-level group -> multiplier for ``mode``, then ``edits`` (path -> multiplier) on top.

    Args:
        model: The model whose top-level groups are set (input side first).
        mode: ``"uniform"`` (all 1), ``"layer_decay"`` (group ``i`` of ``n`` at ``factor **
            (n - 1 - i)``) or ``"discriminative"`` (geometric from ``lo`` to 1, fastai).
        factor: The layer decay, in (0, 1].
        lo: The first group's multiplier in ``"discriminative"`` mode, above 0.
        edits: Rows set by hand; the longest path wins where they overlap.

    Raises:
        ValueError: an unknown mode (close matches named), a factor outside (0, 1], a rate
            at or below 0, an edit for a path that does not exist, or no parameters.
    """
    require_module(model)
    groups = top_level_groups(model)
    if not groups:
        raise ValueError("the model has no parameters: there is nothing to set a rate for")
    n = len(groups)
    if mode == "uniform":
        base = [1.0] * n
    elif mode == "layer_decay":
        decay = check_layer_decay(factor)
        assert decay is not None
        base = [decay ** (n - 1 - i) for i in range(n)]
    elif mode == "discriminative":
        base = even_mults(check_rate(lo, "lo"), 1.0, n)
    else:
        raise unknown_name_error("lr dial mode", str(mode), DIAL_MODES)
    out = dict(zip(groups, base, strict=True))
    checked = check_mults(edits)
    mults_by_param(model, checked)  # every edited path must exist (close matches named)
    out.update(checked)
    return out


def row_multipliers(model: nn.Module, mults: Mapping[str, float]) -> dict[str, float | None]:
    """Module path -> the multiplier its parameters train at (0 when frozen, None when mixed)."""
    per_param = mults_by_param(require_module(model), check_mults(mults))
    rows: dict[str, float | None] = {}
    for path, module in model.named_modules():
        values = {
            0.0 if not p.requires_grad else per_param.get(id(p), 1.0) for p in module.parameters()
        }
        if values:
            rows[path] = values.pop() if len(values) == 1 else None
    return rows


def lr_config(mults: Mapping[str, float], target: str, *, lr: float = 1e-3) -> Any:
    """The multipliers for another tool: ``"torch"`` code, ``"mmengine"`` ``paramwise_cfg``.

    Raises:
        ValueError: ``"timm"`` (its optimizer factory takes one ``layer_decay``, not
            multipliers by path: use the torch groups), a glob key for mmengine (it matches
            keys as substrings), or an unknown target.
    """
    checked = check_mults(mults)
    rate = check_rate(lr, "lr")
    if target == "torch":
        return lr_groups_code(checked, rate)
    if target == "mmengine":
        globs = [k for k in checked if any(ch in k for ch in "*?[")]
        if globs:
            raise ValueError(
                f"mmengine's custom_keys match as substrings and cannot express the patterns "
                f"{', '.join(map(repr, globs))}; use exact paths, or the 'torch' target"
            )
        keys = {k: {"lr_mult": v} for k, v in checked.items()}
        return {"optimizer": {"lr": rate}, "paramwise_cfg": {"custom_keys": keys}}
    if target == "timm":
        raise ValueError(
            "timm's create_optimizer_v2 cannot express learning-rate multipliers by path (it "
            "takes one layer_decay factor); use lr_config(..., 'torch') or param_groups(...)"
        )
    raise unknown_name_error("config target", str(target), CONFIG_TARGETS)
