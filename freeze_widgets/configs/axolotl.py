"""axolotl's ``unfrozen_parameters`` (``axolotl/utils/freeze.py``, ``freeze_layers_except``).

axolotl freezes every parameter, then unfreezes each name where
``re.match(re.sub(r"\\.(?!\\+)", "\\\\.", pattern), name)`` matches: anchored at the start only,
dots literal (a dot before ``+`` stays a wildcard). So ``model.layers.1`` also unfreezes
layers 10-19, though the docstring says a pattern "will match any part of the layer name". An
optional ``[start:end]`` suffix trains only those rows, through a gradient hook: the other rows
stay in the optimizer and weight decay still moves them (axolotl PR #3416). An empty or missing
list freezes nothing at all.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from freeze_widgets.configs._common import (
    GradMap,
    check_keys,
    prefix_overreach,
    reachable,
    string_list,
)
from freeze_widgets.freezing.spec import covering_paths

KEYS = {"unfrozen_parameters": "patterns of parameter names to train; all others are frozen"}


def parse_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[int, int | None] | None]:
    """``LayerNamePattern``: the compiled name regex and the optional row range."""
    match = re.match(r"^(.+)\[([0-9]*)(?::([0-9]*))?\]$", pattern)
    base: str = pattern
    rows: tuple[int, int | None] | None = None
    if match:
        base, start_part, end_part = match.groups()
        if end_part is None and start_part.isdecimal():
            rows = (int(start_part), int(start_part) + 1)
        else:
            start = int(start_part) if start_part else 0
            end = int(end_part) if end_part else None
            if end is not None and start >= end:
                raise ValueError(f"invalid row range in axolotl pattern {pattern!r}: end <= start")
            rows = (start, end)
    try:
        return re.compile(re.sub(r"\.(?!\+)", "\\.", base)), rows
    except re.error as exc:
        raise ValueError(f"axolotl pattern {pattern!r} is not a valid regex: {exc}") from None


def grad_map(config: dict[str, Any], model: nn.Module) -> tuple[GradMap, list[str]]:
    """What ``freeze_layers_except(model, unfrozen_parameters)`` leaves trainable, and notes."""
    check_keys(config, KEYS, "axolotl")
    patterns = string_list(config, "unfrozen_parameters")
    names = [n for n, _ in model.named_parameters()]
    if not patterns:
        return dict.fromkeys(names, True), ["no unfrozen_parameters: axolotl freezes nothing"]
    compiled = [(p, *parse_pattern(p)) for p in patterns]
    out = {n: any(rx.match(n) for _, rx, _ in compiled) for n in names}
    notes = []
    for raw, rx, rows in compiled:
        hits = [n for n in names if rx.match(n)]
        if not hits:
            notes.append(f"{raw!r} matches no parameter of this model")
        literal = rx.pattern.replace("\\.", ".")
        if re.escape(literal).replace("\\.", ".") == literal:  # a plain dotted name
            over = prefix_overreach(literal, hits)
            if over:
                shown = ", ".join(over[:3]) + (" ..." if len(over) > 3 else "")
                notes.append(
                    f"{raw!r} also trains {shown} ({len(over)} more rows): axolotl's re.match "
                    f"is anchored at the start only; write {literal + '.'!r} for that row alone"
                )
        if rows is not None:
            notes.append(
                f"{raw!r} trains rows {rows[0]}:{rows[1] if rows[1] is not None else ''} "
                "through a gradient hook; the whole tensor still trains here and sits in the "
                "optimizer, so weight decay moves the other rows (axolotl PR #3416)"
            )
    if not any(out.values()):
        notes.append("every parameter is frozen: nothing will train")
    return out, notes


def write(wanted: GradMap, model: nn.Module) -> dict[str, Any]:
    """``unfrozen_parameters`` that train exactly ``wanted``: a trailing dot ends each row."""
    if all(wanted.values()):
        return {}
    named = dict(model.named_parameters())
    train = {id(named[n]) for n, t in wanted.items() if t}
    paths = reachable(covering_paths(model, lambda p: id(p) in train), named)
    if not paths:
        # An empty list would freeze nothing; this matches no name, so everything is frozen.
        return {"unfrozen_parameters": ["^$"]}
    params = set(named)
    return {"unfrozen_parameters": [_pattern(p, p in params) for p in paths]}


def _pattern(path: str, is_parameter: bool) -> str:
    # Dots stay plain (axolotl makes them literal; an escaped dot would become "\\." there).
    escaped = ".".join(re.escape(part) for part in path.split("."))
    return f"{escaped}$" if is_parameter else f"{escaped}."
