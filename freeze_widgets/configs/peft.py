"""PEFT's view of a freeze (``peft/utils/other.py`` ``_set_trainable``, ``LoraConfig``).

PEFT freezes the whole base model; modules whose name *ends with* a ``modules_to_save`` entry
(plain ``str.endswith``, so ``"fc"`` also catches ``"head_fc"``) are copied and the copies train;
``bias="all"`` trains every bias; LoRA adapters are added on ``target_modules`` (exact name or
``.name`` suffix; a string is a full-match regex) while those base weights stay frozen. The map
here is over base-model names: a name "trains" when its module is saved (trained as a copy).
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from freeze_widgets.configs._common import (
    GradMap,
    InexpressibleError,
    check_keys,
    difference_text,
    string_list,
)
from freeze_widgets.freezing.spec import covering_paths

KEYS = {
    "modules_to_save": "module name suffixes copied and trained in full",
    "target_modules": "LoRA targets (list of names, or a full-match regex string)",
    "exclude_modules": "modules never given LoRA",
    "layers_to_transform": "layer indices given LoRA",
    "layers_pattern": "name of the layer list for layers_to_transform",
    "trainable_token_indices": "embedding rows trained (partly trained embedding)",
    "bias": "'none' (default), 'all' or 'lora_only'",
    "r": "LoRA rank",
    "lora_alpha": "LoRA scaling",
    "lora_dropout": "LoRA dropout",
    "task_type": "PEFT task type",
}


def _lora_targets(config: dict[str, Any], names: list[str]) -> list[str]:
    targets = config.get("target_modules")
    if isinstance(targets, str):
        return [n for n in names if re.fullmatch(targets, n)]
    listed = string_list(config, "target_modules")
    return [n for n in names if n in listed or any(n.endswith(f".{t}") for t in listed)]


def grad_map(config: dict[str, Any], model: nn.Module) -> tuple[GradMap, list[str]]:
    """Which base parameters train (in a saved copy, or as a bias) under this config."""
    check_keys(config, KEYS, "peft")
    saves = string_list(config, "modules_to_save")
    bias = config.get("bias", "none")
    if bias not in ("none", "all", "lora_only"):
        raise ValueError(f"bias must be 'none', 'all' or 'lora_only'; got {bias!r}")
    modules = [n for n, _ in model.named_modules(remove_duplicate=False) if n]
    saved = [n for n in modules if any(n.endswith(s) for s in saves)]
    trains: set[int] = set()
    for n in saved:
        trains.update(id(p) for p in model.get_submodule(n).parameters())
    notes = []
    for s in saves:
        hits = [n for n in saved if n.endswith(s)]
        if not hits:
            notes.append(f"modules_to_save {s!r} matches no module of this model")
        elif len(hits) > 1:
            notes.append(
                f"modules_to_save {s!r} matches {len(hits)} modules ({', '.join(hits[:3])} ...)"
            )
    out = {
        n: id(p) in trains or (bias == "all" and "bias" in n) for n, p in model.named_parameters()
    }
    lora = _lora_targets(config, modules)
    if lora:
        notes.append(
            f"LoRA adapters are added to {len(lora)} modules; their base weights stay frozen"
        )
    if config.get("trainable_token_indices"):
        notes.append("trainable_token_indices trains some embedding rows only (not shown per row)")
    return out, notes


def write(wanted: GradMap, model: nn.Module) -> dict[str, Any]:
    """``modules_to_save`` covering the trainable part; LoRA ``target_modules`` are yours to add."""
    named = dict(model.named_parameters())
    train = {id(named[n]) for n, t in wanted.items() if t}
    paths = covering_paths(model, lambda p: id(p) in train)
    if "" in paths:
        raise InexpressibleError(
            "PEFT freezes the base model; training all of it is full fine-tuning", None, ""
        )
    config: dict[str, Any] = {"modules_to_save": [p for p in paths if p not in named]}
    params = [p for p in paths if p in named]
    got, _ = grad_map(config, model)
    if params or got != wanted:
        raise InexpressibleError(
            f"PEFT saves whole modules (matched by name suffix); this spec cannot be said exactly "
            f"({', '.join(params[:3]) or 'a suffix reaches other modules'}). Nearest config: "
            f"{config}, which {difference_text(wanted, got, model)}",
            config,
            difference_text(wanted, got, model),
        )
    return config
