"""ms-swift's full-tuning freeze (``swift/utils/transformers_utils.py``, 4.x).

In order: every parameter trainable; ``freeze_parameters_ratio`` freezes the leading tensors
of ``model.parameters()`` whose running total of elements stays within that share (so the cut
can land in the middle of a block); ``freeze_parameters`` freezes names that *start with* a
prefix (``model.layers.1`` also freezes layers 10-19); ``freeze_parameters_regex`` freezes
names where ``re.search`` finds it; then ``trainable_parameters`` (prefixes) and
``trainable_parameters_regex`` make names trainable again, whatever froze them. An invalid
regex is only logged by ms-swift (nothing happens); here it is an error.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from typing import Any

from torch import nn

from freeze_widgets.configs._common import (
    GradMap,
    check_keys,
    get_typed,
    layer_blocks,
    prefix_overreach,
    reachable,
    string_list,
)
from freeze_widgets.freezing.spec import covering_paths

KEYS = {
    "freeze_parameters": "name prefixes to freeze",
    "freeze_parameters_regex": "regex (re.search) of names to freeze",
    "freeze_parameters_ratio": "share (0-1) of leading parameter elements to freeze",
    "trainable_parameters": "name prefixes to make trainable again (applied last)",
    "trainable_parameters_regex": "regex of names to make trainable again (applied last)",
    "freeze_llm": "multimodal models only",
    "freeze_vit": "multimodal models only",
    "freeze_aligner": "multimodal models only",
}


def _regex(config: dict[str, Any], key: str) -> re.Pattern[str] | None:
    value = get_typed(config, key, (str,), None)
    if value is None:
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(
            f"{key} {value!r} is not a valid regex ({exc}); ms-swift would only log a "
            "warning and skip it, silently training what it meant to freeze"
        ) from None


def ratio_cut(model: nn.Module, ratio: float) -> int:
    """How many leading tensors of ``model.parameters()`` the ratio freezes (ms-swift's rule)."""
    sizes = [p.numel() for p in model.parameters()]
    budget = int(sum(sizes) * ratio)
    return bisect.bisect_right(list(itertools.accumulate(sizes)), budget) if ratio > 0 else 0


def grad_map(config: dict[str, Any], model: nn.Module) -> tuple[GradMap, list[str]]:
    """What ms-swift's ``freeze_parameters`` then ``activate_parameters`` leave trainable."""
    check_keys(config, KEYS, "ms-swift")
    ratio = float(get_typed(config, "freeze_parameters_ratio", (int, float), 0.0))
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"freeze_parameters_ratio must be within 0..1; got {ratio}")
    freeze_prefixes = string_list(config, "freeze_parameters")
    train_prefixes = string_list(config, "trainable_parameters")
    freeze_rx = _regex(config, "freeze_parameters_regex")
    train_rx = _regex(config, "trainable_parameters_regex")
    named = list(model.named_parameters())
    cut = ratio_cut(model, ratio)
    out = {n: True for n, _ in named}
    for n, _ in named[:cut]:
        out[n] = False
    for n, _ in named:
        if any(n.startswith(f) for f in freeze_prefixes) or (freeze_rx and freeze_rx.search(n)):
            out[n] = False
        if any(n.startswith(t) for t in train_prefixes) or (train_rx and train_rx.search(n)):
            out[n] = True
    notes = _prefix_notes(freeze_prefixes + train_prefixes, [n for n, _ in named])
    if cut:
        notes += _ratio_notes(model, ratio, cut, named)
    if any(k in config for k in ("freeze_llm", "freeze_vit", "freeze_aligner")):
        notes.append(
            "freeze_llm / freeze_vit / freeze_aligner act only on multimodal models (their "
            "model_arch prefixes); they are not applied in this preview"
        )
    if not any(out.values()):
        notes.append("every parameter is frozen: nothing will train")
    return out, notes


def _prefix_notes(prefixes: list[str], names: list[str]) -> list[str]:
    notes = []
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            notes.append(f"prefix {prefix!r} matches no parameter of this model")
        over = prefix_overreach(prefix, names)
        if over:
            shown = ", ".join(over[:3]) + (" ..." if len(over) > 3 else "")
            notes.append(
                f"prefix {prefix!r} also reaches {shown} (ms-swift uses str.startswith); "
                f"write {prefix + '.'!r} for that row alone"
            )
    return notes


def _ratio_notes(
    model: nn.Module, ratio: float, cut: int, named: list[tuple[str, nn.Parameter]]
) -> list[str]:
    """Say where the ratio's cut lands, and the block boundaries either side of it."""
    last = named[cut - 1][0]
    frozen = {n for n, _ in named[:cut]}
    total = sum(p.numel() for _, p in named)
    for block in layer_blocks(model):
        inside = [n for n, _ in named if n.startswith(block + ".")]
        hit = [n for n in inside if n in frozen]
        if hit and len(hit) < len(inside):
            done = [p.numel() for n, p in named if n.startswith(block + ".")]
            before = sum(p.numel() for n, p in named[:cut] if not n.startswith(block + "."))
            # The smallest ratio (6 digits, rounded up) whose cut is exactly at each boundary.
            lo = math.ceil(before / total * 1e6) / 1e6
            hi = math.ceil((before + sum(done)) / total * 1e6) / 1e6
            return [
                f"freeze_parameters_ratio {ratio} cuts {block} in the middle: it freezes "
                f"{len(hit)} of its {len(inside)} tensors (through {last}); "
                f"freeze_parameters_ratio {lo} stops before it, {hi} after it"
            ]
    return [f"freeze_parameters_ratio {ratio} freezes the first {cut} tensors (through {last})"]


def write(wanted: GradMap, model: nn.Module) -> dict[str, Any]:
    """``freeze_parameters`` prefixes (each ending a row with a dot) that freeze ``wanted``."""
    if all(wanted.values()):
        return {}
    if not any(wanted.values()):
        return {"freeze_parameters_ratio": 1.0}
    named = dict(model.named_parameters())
    frozen = {id(named[n]) for n, t in wanted.items() if not t}
    paths = reachable(covering_paths(model, lambda p: id(p) in frozen), named)
    return {"freeze_parameters": [p if p in named else f"{p}." for p in paths]}
