"""Lightning's ``BaseFinetuning.freeze(modules, train_bn)`` (``callbacks/finetuning.py``).

The config is the phase a ``BackboneFinetuning``-style callback starts from:
``{"freeze": [module paths], "train_bn": bool}`` meaning
``BaseFinetuning.freeze([model.get_submodule(p) for p in freeze], train_bn=train_bn)``. Lightning
flattens the modules to leaves (and parents owning parameters); a BatchNorm leaf with
``train_bn`` (Lightning's default) is made *trainable*, any other leaf has its own parameters
frozen, and a frozen BatchNorm gets ``track_running_stats=False`` (statistics stop updating, but
in train mode it normalises with the batch's statistics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from freeze_widgets.base.checks import BnPolicy
from freeze_widgets.base.modules import parent_path
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
    "freeze": "module paths passed to BaseFinetuning.freeze",
    "train_bn": "bool: BatchNorm layers under them stay trainable (Lightning's default)",
}


def flatten(module: nn.Module) -> list[nn.Module]:
    """``BaseFinetuning.flatten_modules``: leaves, and parents that own parameters."""
    return [m for m in module.modules() if not list(m.children()) or m._parameters]


def grad_map(config: dict[str, Any], model: nn.Module) -> tuple[GradMap, list[str]]:
    """What ``BaseFinetuning.freeze`` leaves trainable on a fully trainable model."""
    check_keys(config, KEYS, "lightning")
    train_bn = get_typed(config, "train_bn", (bool,), True)
    frozen: set[int] = set()
    for path in string_list(config, "freeze"):
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"lightning: {path!r} is not a module of this model") from None
        for leaf in flatten(module):
            if not (isinstance(leaf, _BatchNorm) and train_bn):
                frozen.update(id(p) for p in leaf.parameters(recurse=False))
    notes = []
    if train_bn and any(isinstance(m, _BatchNorm) for m in model.modules()):
        notes.append("train_bn=True keeps the BatchNorm layers under the frozen modules training")
    return {n: id(p) not in frozen for n, p in model.named_parameters()}, notes


def write(wanted: GradMap, model: nn.Module, bn: BnPolicy) -> dict[str, Any]:
    """The shortest ``freeze`` list, with ``train_bn`` True where that says it more briefly."""
    named = dict(model.named_parameters())
    frozen = {id(named[n]) for n, t in wanted.items() if not t}
    bn_params = _bn_params_in_frozen_parents(model, frozen)
    # Lightning stops a frozen BatchNorm's statistics: bn="train" there cannot be said.
    all_bn = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters()}
    stats_differ = bool(frozen & all_bn) and bn == "train"
    fits, misses = [], []
    for train_bn, cover in ((False, frozen), (True, frozen | bn_params)):
        paths = covering_paths(model, _member(cover))
        config = {"freeze": [p for p in paths if p not in named], "train_bn": train_bn}
        got, _ = grad_map(config, model)
        if got == wanted and not (stats_differ and not train_bn):
            fits.append(config)
        else:
            misses.append((config, got))
    if fits:
        return min(fits, key=lambda c: len(c["freeze"]))
    nearest, got = misses[0]
    raise InexpressibleError(
        "Lightning freezes whole modules (and a frozen BatchNorm stops its statistics, so "
        'bn="train" on frozen BatchNorm layers cannot be said). Nearest config: '
        f"{nearest}, which {difference_text(wanted, got, model)}",
        nearest,
        difference_text(wanted, got, model),
    )


def _bn_params_in_frozen_parents(model: nn.Module, frozen: set[int]) -> set[int]:
    """BatchNorm parameters whose parent's other parameters are all frozen.

    Covering those too lets a ``train_bn=True`` phase name a whole block ("layer1") rather than
    each of its convolutions.
    """
    bn_ids = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters()}
    out: set[int] = set()
    for path, mod in model.named_modules():
        if isinstance(mod, _BatchNorm) and path:
            parent = model.get_submodule(parent_path(path))
            others = [id(p) for p in parent.parameters() if id(p) not in bn_ids]
            if others and all(i in frozen for i in others):
                out.update(id(p) for p in mod.parameters())
    return out


def _member(ids: set[int]) -> Callable[[nn.Parameter], bool]:
    return lambda p: id(p) in ids
