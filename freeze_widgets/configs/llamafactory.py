"""LLaMA-Factory's freeze tuning (``model/adapter.py`` ``_setup_freeze_tuning``, 0.9.x).

The layer count comes from the model config (``num_hidden_layers`` / ``num_layers`` /
``n_layer``). ``freeze_trainable_layers`` n > 0 trains the last n layers, n < 0 the first |n|
(``use_llama_pro``: every (L/n)-th layer). For each layer id and each module of
``freeze_trainable_modules`` (default ``all``) the pattern ``.{id}.{module}`` is built, plus
each ``freeze_extra_modules`` name; a parameter trains when its name *contains* a pattern (so
``norm`` as an extra module also trains every ``input_layernorm``). Everything else is frozen.
Only runs of first or last layers are expressible (its issues #6731, #8834).
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
    get_typed,
)

KEYS = {
    "finetuning_type": "must be 'freeze'",
    "freeze_trainable_layers": "int: n>0 last n layers, n<0 first |n| (default 2)",
    "freeze_trainable_modules": "comma-separated modules inside a layer, or 'all' (default)",
    "freeze_extra_modules": "comma-separated modules outside the layers to train",
    "use_llama_pro": "bool: train every (L/n)-th layer",
    "freeze_vision_tower": "multimodal models only",
    "freeze_multi_modal_projector": "multimodal models only",
    "freeze_language_model": "multimodal models only",
}
_MULTIMODAL = ("freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model")


def num_layers(model: nn.Module) -> int:
    """The layer count LLaMA-Factory reads from ``model.config``."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", config)
    n = (
        getattr(config, "num_hidden_layers", None)
        or getattr(config, "num_layers", None)
        or getattr(config, "n_layer", None)
    )
    if not isinstance(n, int) or n <= 0:
        raise ValueError(
            "LLaMA-Factory reads the layer count from model.config (num_hidden_layers, num_layers "
            "or n_layer) and this model has none: 'Current model does not support freeze tuning'"
        )
    return n


def _split(value: object, key: str) -> list[str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a comma-separated string; got {value!r}")
    return [item.strip() for item in value.split(",")]


def module_names(names: list[str]) -> tuple[set[str], set[str]]:
    """LLaMA-Factory's ``hidden_modules`` and ``non_hidden_modules`` for these names."""
    hidden, other = set(), set()
    for name in names:
        if ".0." in name:
            hidden.add(name.split(".0.")[-1].split(".")[0])
        elif ".1." in name:
            hidden.add(name.split(".1.")[-1].split(".")[0])
        if re.search(r"\.\d+\.", name) is None and "." in name:
            other.add(name.split(".")[-2])
    return hidden, other


def layer_ids(n_layers: int, n: int, llama_pro: bool) -> list[int]:
    if llama_pro:
        if n == 0 or n_layers % n != 0:
            raise ValueError(
                f"use_llama_pro: num_layers {n_layers} must be divisible by "
                f"freeze_trainable_layers {n}"
            )
        stride = n_layers // n
        return list(range(stride - 1, n_layers + stride - 1, stride))
    if n > 0:
        return list(range(max(0, n_layers - n), n_layers))
    return list(range(min(-n, n_layers)))


def grad_map(config: dict[str, Any], model: nn.Module) -> tuple[GradMap, list[str]]:
    """What ``_setup_freeze_tuning`` leaves trainable (text models), and notes."""
    check_keys(config, KEYS, "LLaMA-Factory")
    kind = config.get("finetuning_type", "freeze")
    if kind != "freeze":
        raise ValueError(f"finetuning_type is {kind!r}; only 'freeze' tuning is read here")
    if any(k in config for k in _MULTIMODAL) and hasattr(
        getattr(model, "config", None), "vision_config"
    ):
        raise ValueError("multimodal (vision tower / projector) keys are not previewed here")
    n = get_typed(config, "freeze_trainable_layers", (int,), 2)
    pro = get_typed(config, "use_llama_pro", (bool,), False)
    trainable_modules = _split(
        config.get("freeze_trainable_modules", "all"), "freeze_trainable_modules"
    )
    extra = config.get("freeze_extra_modules")
    extra_modules = _split(extra, "freeze_extra_modules") if extra else []
    names = [name for name, _ in model.named_parameters()]
    hidden, other = module_names(names)
    ids = layer_ids(num_layers(model), n, pro)
    patterns = []
    for module in trainable_modules:
        if module != "all" and module not in hidden:
            raise ValueError(
                f"LLaMA-Factory would stop: module {module!r} is not found, choose from "
                f"{', '.join(sorted(hidden))}"
            )
        patterns += [f".{i}.{module if module != 'all' else ''}" for i in ids]
    for module in extra_modules:
        if module not in other:
            raise ValueError(
                f"LLaMA-Factory would stop: extra module {module!r} is not found, choose from "
                f"{', '.join(sorted(other))}"
            )
        patterns.append(module)
    out = {name: any(p in name for p in patterns) for name in names}
    return out, _notes(out, extra_modules, names)


def _notes(out: GradMap, extra: list[str], names: list[str]) -> list[str]:
    notes = []
    for module in extra:
        inside = [n for n in names if module in n and re.search(r"\.\d+\.", n)]
        if inside:
            notes.append(
                f"extra module {module!r} is matched as a substring, so it also trains "
                f"{len(inside)} tensors inside the layers ({inside[0]}, ...)"
            )
    if not any(out.values()):
        notes.append("every parameter is frozen: nothing will train")
    return notes


def write(wanted: GradMap, model: nn.Module) -> dict[str, Any]:
    """The LLaMA-Factory freeze config that trains exactly ``wanted``.

    Raises:
        InexpressibleError: no config says this (layers not a first or last run, a module not
            in every chosen layer, ...); carries the nearest config and its difference.
    """
    names = list(wanted)
    n_layers = num_layers(model)
    hidden, other = module_names(names)
    ids = sorted({i for i in range(n_layers) for n in names if wanted[n] and f".{i}." in n})
    modules = sorted(
        {m for m in hidden for n in names if wanted[n] and any(f".{i}.{m}" in n for i in ids)}
    )
    extras = sorted(
        {m for m in other for n in names if wanted[n] and m in n and not re.search(r"\.\d+\.", n)}
    )
    # The runs the trainable layer ids point at come first; the full scan (for the nearest
    # config) only matters when the freeze cannot be said exactly.
    likely = [len(ids), -len(ids)]
    candidates = [_config(k, modules, hidden, extras, False) for k in likely]
    candidates += [
        _config(k, modules, hidden, extras, False) for k in range(-n_layers, n_layers + 1)
    ]
    candidates += [
        _config(k, modules, hidden, extras, True)
        for k in range(1, n_layers + 1)
        if n_layers % k == 0
    ]
    scored = []
    for cfg in candidates:
        got, _ = grad_map(cfg, model)
        if got == wanted:
            return cfg
        scored.append((_distance(wanted, got, model), cfg, got))
    _, nearest, got = min(scored, key=lambda s: s[0])
    raise InexpressibleError(
        f"LLaMA-Factory cannot express this freeze (layers with trainable parameters: "
        f"{_ids_text(ids)}): it trains a run of first or last layers only (or every (L/n)-th "
        f"with use_llama_pro), the same modules in each, and extra modules matched as "
        f"substrings. Nearest config: {nearest}, which {difference_text(wanted, got, model)} "
        f"compared with the spec",
        nearest,
        difference_text(wanted, got, model),
    )


def _config(
    k: int, modules: list[str], hidden: set[str], extras: list[str], pro: bool
) -> dict[str, Any]:
    cfg: dict[str, Any] = {"finetuning_type": "freeze", "freeze_trainable_layers": k}
    cfg["freeze_trainable_modules"] = (
        "all" if not modules or set(modules) == hidden else ",".join(modules)
    )
    if extras:
        cfg["freeze_extra_modules"] = ",".join(extras)
    if pro:
        cfg["use_llama_pro"] = True
    return cfg


def _distance(wanted: GradMap, got: GradMap, model: nn.Module) -> int:
    numels = {n: p.numel() for n, p in model.named_parameters()}
    return sum(numels[n] for n in wanted if wanted[n] != got[n])


def _ids_text(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids) or "none"
