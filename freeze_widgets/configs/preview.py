"""The three calls: ``to_config``, ``from_config`` and ``preview``, dispatched per target.

Each target module holds the tool's own rule (``grad_map``: config -> which parameters train,
with notes on surprises) and a writer (``write``: a requires_grad map -> config). ``to_config``
replays the tool's rule on what it wrote and refuses to hand back a config that means anything
else, so no approximate config leaves here silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from freeze_widgets.base.checks import BnPolicy
from freeze_widgets.base.wording import unknown_name_error
from freeze_widgets.configs._common import (
    ConfigPreview,
    GradMap,
    compare,
    difference_text,
    dump_config,
    grad_map_of_spec,
    load_config,
    require_model,
    spec_from_grad_map,
)

# Functions, not ``from freeze_widgets.configs import axolotl``: the package's __init__
# imports this module, and the import-graph check would count that as a cycle.
from freeze_widgets.configs.axolotl import grad_map as axolotl_map
from freeze_widgets.configs.axolotl import write as axolotl_write
from freeze_widgets.configs.fts import grad_map as fts_map
from freeze_widgets.configs.fts import write as fts_write
from freeze_widgets.configs.lightning import grad_map as lightning_map
from freeze_widgets.configs.lightning import write as lightning_write
from freeze_widgets.configs.llamafactory import grad_map as llamafactory_map
from freeze_widgets.configs.llamafactory import write as llamafactory_write
from freeze_widgets.configs.ms_swift import grad_map as ms_swift_map
from freeze_widgets.configs.ms_swift import write as ms_swift_write
from freeze_widgets.configs.peft import grad_map as peft_map
from freeze_widgets.configs.peft import write as peft_write
from freeze_widgets.configs.timm import bn_policy as timm_bn_policy
from freeze_widgets.configs.timm import grad_map as timm_map
from freeze_widgets.configs.timm import write as timm_write
from freeze_widgets.freezing.spec import FreezeSpec

_Reader = Callable[[dict[str, Any], nn.Module], tuple[GradMap, list[str]]]
_READERS: dict[str, _Reader] = {
    "llamafactory": llamafactory_map,
    "axolotl": axolotl_map,
    "ms-swift": ms_swift_map,
    "peft": peft_map,
    "timm": timm_map,
    "lightning": lightning_map,
    "fts": fts_map,
}
TARGETS: tuple[str, ...] = tuple(_READERS)

_HEADERS = {
    "llamafactory": "LLaMA-Factory freeze tuning: merge into your training YAML",
    "axolotl": "axolotl: merge into your config YAML",
    "ms-swift": "ms-swift full tuning (--tuner_type full): merge into your arguments",
    "peft": "PEFT: LoraConfig(**this, target_modules=[...your LoRA targets])",
    "timm": "timm.utils.freeze(model, **this)",
    "lightning": (
        "Lightning: BaseFinetuning.freeze([model.get_submodule(p) for p in cfg['freeze']],\n"
        "    train_bn=cfg['train_bn']) in freeze_before_training"
    ),
}
_HEADERS["fts"] = (
    "Finetuning-Scheduler: ft_schedule YAML, phase 0 (add later phases as you like);\n"
    "frozen BatchNorm statistics keep updating unless frozen_bn_track_running_stats=False"
)


def _target(target: object) -> str:
    if not isinstance(target, str):
        raise TypeError(f"target must be one of {', '.join(TARGETS)}; got {type(target).__name__}")
    key = target.lower().replace("_", "-")
    aliases = {"llama-factory": "llamafactory", "swift": "ms-swift", "finetuning-scheduler": "fts"}
    key = aliases.get(key, key)
    if key not in _READERS:
        raise unknown_name_error(
            "target", target, TARGETS, way_out=f"Targets: {', '.join(TARGETS)}."
        )
    return key


def _write(target: str, wanted: GradMap, model: nn.Module, bn: BnPolicy) -> dict[str, Any]:
    if target == "timm":
        return timm_write(wanted, model, bn)
    if target == "lightning":
        return lightning_write(wanted, model, bn)
    writers = {
        "llamafactory": llamafactory_write,
        "axolotl": axolotl_write,
        "ms-swift": ms_swift_write,
        "peft": peft_write,
        "fts": fts_write,
    }
    return writers[target](wanted, model)


def to_config(spec: FreezeSpec, target: str, model: nn.Module) -> str:
    """The config ``target`` reads that freezes exactly what ``spec`` freezes on ``model``.

    Returns YAML text (the tool's keys, with a comment line saying where it goes).

    Raises:
        TypeError: ``spec`` is not a FreezeSpec, or ``model`` not an eager module.
        ValueError: a spec path is not in ``model``, or an unknown target.
        InexpressibleError: the tool cannot say this freeze; the error names the nearest config
            it can say and its difference in parameters (``.nearest``, ``.difference``).
    """
    if not isinstance(spec, FreezeSpec):
        raise TypeError(f"spec must be a FreezeSpec; got {type(spec).__name__}")
    key = _target(target)
    model = require_model(model)
    wanted = grad_map_of_spec(spec, model)
    config = _write(key, wanted, model, spec.bn)
    got, _ = _READERS[key](config, model)
    if got != wanted:  # a writer bug must never reach a user's training run
        raise AssertionError(
            f"internal: the {key} config written does not replay to the spec "
            f"({difference_text(wanted, got, model)})"
        )
    return dump_config(config, _HEADERS[key])


def preview(
    target: str, config: object, model: nn.Module, spec: FreezeSpec | None = None
) -> ConfigPreview:
    """What ``config`` freezes and trains on ``model`` under ``target``'s own rules.

    Nothing is changed. With ``spec``, the preview also lists the parameters where the config
    and the spec disagree. ``notes`` name the surprises (a prefix reaching other layers, a
    ratio cutting a block, an extra module matched as a substring, a pattern matching nothing).

    Raises:
        TypeError / ValueError: an unknown target, malformed YAML, an unknown key, a value of
            the wrong type, or a name the tool itself would refuse.
    """
    key = _target(target)
    model = require_model(model)
    data = load_config(config, key)
    got, notes = _READERS[key](data, model)
    if spec is not None and not isinstance(spec, FreezeSpec):
        raise TypeError(f"spec must be a FreezeSpec or None; got {type(spec).__name__}")
    return compare(key, data, got, model, notes, spec)


def from_config(target: str, config: object, model: nn.Module) -> FreezeSpec:
    """The FreezeSpec that reproduces what ``config`` freezes on ``model`` (nothing changed).

    BatchNorm policy: timm's ``include_bn_running_stats`` is "frozen" (else "train"),
    Lightning's ``train_bn=False`` is "eval" (statistics fixed), the LLM tools "eval".

    Raises:
        TypeError / ValueError: as :func:`preview`; also when a name in the config matches
            nothing in ``model`` (a config for another model).
    """
    result = preview(target, config, model)
    unmatched = [n for n in result.notes if "matches no" in n]
    if unmatched:
        raise ValueError(
            f"this {result.target} config names what is not in this model ({unmatched[0]}): is "
            "it for another model? Check it with preview() first"
        )
    bn: BnPolicy = "train" if result.target == "fts" else "eval"  # FTS's track_running_stats
    if result.target == "timm":
        bn = timm_bn_policy(result.config)
    return spec_from_grad_map(model, result.grad_map, bn)
