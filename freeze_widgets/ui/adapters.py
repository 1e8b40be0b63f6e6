"""Adapter layers (PEFT LoRA / DoRA) as what they are: method, rank, alpha, active adapter.

PEFT wraps an adapted layer in its own ``lora.Linear`` (whatever the base layer is: a GPT-2
``Conv1D`` shows as "Linear") and gives it empty bookkeeping children (``lora_dropout``,
``lora_embedding_A``, ``lora_magnitude_vector``...). The tree names the wrapper by its method
and folds the children that hold no parameters. Read by attribute, so peft need not be imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["adapter_label", "is_adapter"]


def is_adapter(module: nn.Module) -> bool:
    """True for a PEFT LoRA-family layer: a base layer plus per-adapter rank and A/B weights."""
    return (
        isinstance(getattr(module, "base_layer", None), nn.Module)
        and isinstance(getattr(module, "r", None), Mapping)
        and isinstance(getattr(module, "lora_A", None), nn.Module)
    )


def _active(module: nn.Module) -> list[str]:
    active: Any = getattr(module, "active_adapters", None)
    if active is None:
        active = getattr(module, "active_adapter", [])
    return [active] if isinstance(active, str) else [str(a) for a in active]


def adapter_label(module: nn.Module) -> str | None:
    """``"LoRA r=4 α=8 on Conv1D"`` (plus which adapter is active when there are several).

    None for a module that is not an adapter layer.
    """
    if not is_adapter(module):
        return None
    ranks: Mapping[str, Any] = module.r  # type: ignore[assignment]
    alphas: Any = getattr(module, "lora_alpha", {})
    magnitude: Any = getattr(module, "lora_magnitude_vector", {})
    active = _active(module)
    parts = []
    for name in ranks:
        method = "DoRA" if name in magnitude else "LoRA"
        alpha = alphas.get(name, "?") if isinstance(alphas, Mapping) else alphas
        tag = f" '{name}'" if len(ranks) > 1 else ""
        state = "" if name in active else " (inactive)"
        parts.append(f"{method}{tag} r={ranks[name]} \u03b1={alpha}{state}")
    base = type(module.base_layer).__name__
    if not parts:
        return f"adapter layer on {base} (no adapter)"
    single = len(ranks) == 1
    note = "" if single or not active else f"; active: {', '.join(active)}"
    return f"{', '.join(parts)} on {base}{note}"
