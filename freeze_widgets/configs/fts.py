"""Finetuning-Scheduler's explicit schedule, phase 0 (``fts_supporters._parse_phase``, 2.x).

``FinetuningScheduler`` freezes the whole module with ``BaseFinetuning.freeze(train_bn=False)``,
then thaws phase 0's ``params``. Each entry is a parameter name if it is one, else a regex tried
with ``re.match`` against every name: anchored at the start only, and dots are wildcards, so
``model.layers.1`` also thaws layers 10-19. An entry matching nothing stops the run (a shared
parameter's second name is pruned with a warning instead). With the default
``frozen_bn_track_running_stats=True`` frozen BatchNorm layers keep updating their statistics
("train"). Later phases thaw more at each transition; only phase 0 is the initial freeze.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from freeze_widgets.configs._common import (
    GradMap,
    prefix_overreach,
    reachable,
    string_list,
)
from freeze_widgets.freezing.spec import covering_paths

PHASE_KEYS = ("params", "max_transition_epoch", "lr", "new_optimizer", "new_lr_scheduler")


def phases(config: dict[Any, Any]) -> dict[int, dict[str, Any]]:
    """The schedule's phases by number, each checked for known keys."""
    out: dict[int, dict[str, Any]] = {}
    for key, phase in config.items():
        depth = int(key) if isinstance(key, int) or str(key).isdecimal() else None
        if depth is None or isinstance(key, bool):
            raise ValueError(f"Finetuning-Scheduler phases are numbered 0, 1, ...; got key {key!r}")
        if not isinstance(phase, dict):
            raise ValueError(f"phase {depth} must be a mapping with a 'params' list")
        for k in phase:
            if k not in PHASE_KEYS:
                raise ValueError(
                    f"unknown Finetuning-Scheduler key {k!r} in phase {depth}; keys: "
                    f"{', '.join(PHASE_KEYS)}"
                )
        out[depth] = phase
    if 0 not in out:
        raise ValueError("the schedule has no phase 0 (what trains from the start)")
    return out


def grad_map(config: dict[Any, Any], model: nn.Module) -> tuple[GradMap, list[str]]:
    """What trains after ``freeze_before_training`` and phase 0's thaw."""
    schedule = phases(config)
    names = [n for n, _ in model.named_parameters()]
    aliases = {n for n, _ in model.named_parameters(remove_duplicate=False)} - set(names)
    thawed: set[str] = set()
    notes = []
    for entry in string_list(schedule[0], "params"):
        if entry in names:
            thawed.add(entry)
            continue
        try:
            pattern = re.compile(entry)
        except re.error as exc:
            raise ValueError(f"phase 0 entry {entry!r} is not a valid regex: {exc}") from None
        hits = [n for n in names if pattern.match(n)]
        if not hits and entry not in aliases:
            raise ValueError(
                f"phase 0 entry {entry!r} matches no parameter of this model (Finetuning-"
                "Scheduler would stop with a MisconfigurationException)"
            )
        thawed.update(hits)
        if re.fullmatch(r"[\w.]+", entry):
            over = prefix_overreach(entry, hits)
            if over:
                shown = ", ".join(over[:3]) + (" ..." if len(over) > 3 else "")
                fixed = re.escape(entry) + r"\."
                notes.append(
                    f"{entry!r} also thaws {shown} (a regex matched at the start only); "
                    f"write {fixed!r}"
                )
    later = sorted(d for d in schedule if d > 0)
    if later:
        notes.append(f"phases {', '.join(map(str, later))} thaw more later; the preview is phase 0")
    return {n: n in thawed for n in names}, notes


def write(wanted: GradMap, model: nn.Module) -> dict[Any, Any]:
    """Phase 0 thawing exactly ``wanted``: exact names, or ``re.escape(path) + "\\."`` rows."""
    named = dict(model.named_parameters())
    train = {id(named[n]) for n, t in wanted.items() if t}
    paths = reachable(covering_paths(model, lambda p: id(p) in train), named)
    params = [p if p in named else (re.escape(p) + r"\." if p else ".*") for p in paths]
    return {0: {"params": params}}
