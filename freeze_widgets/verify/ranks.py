"""FreezeGuard across processes: gather every rank's verdict by digest, check a wrapped model.

Under an initialised process group each rank checks its own tensors (the local shard of an
FSDP2 ``DTensor``); this module gathers what they found, plus a digest of every trainable tensor
that should be replicated (all of them under DDP, replicated ``DTensor`` under FSDP2), so a frozen
tensor that moved on any rank and trainable tensors that differ across ranks are both named with
their ranks. Only violations and 32-character digests cross the group, never tensors.
:func:`check_after_wrap` catches a wrapper that made a frozen parameter trainable again.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from freeze_widgets.checks.findings import Finding
from freeze_widgets.freezing.bn import bn_state, iter_batchnorms
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.verify.rows import covered_by
from freeze_widgets.verify.snapshot import digest
from freeze_widgets.verify.violations import RanksReport, Violation

__all__ = ["canonical", "check_after_wrap", "gather", "group_active"]

# Path segments wrappers insert: DDP, torch.compile, FSDP1, activation checkpointing, Lightning.
_WRAPPER_SEGMENTS = (
    "module",
    "_orig_mod",
    "_fsdp_wrapped_module",
    "_checkpoint_wrapped_module",
    "_forward_module",
)


def group_active() -> bool:
    """Whether a default process group is initialised in this process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def canonical(name: str) -> str:
    """A parameter's name without the segments wrappers insert (``module.fc.w``: ``fc.w``)."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_SEGMENTS)


def _replicated(t: torch.Tensor) -> bool:
    placements = getattr(t, "placements", None)
    return placements is None or all(p.is_replicate() for p in placements)


def gather(model: nn.Module, violations: list[Violation]) -> RanksReport:
    """Collective: every rank calls it at the same point, and every rank gets the same report."""
    dist = torch.distributed
    digests = {
        canonical(n): digest(p)
        for n, p in model.named_parameters()
        if p.requires_grad and _replicated(p)
    }
    payload = (dist.get_rank(), list(violations), digests)
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, payload)
    ranks: list[tuple[int, list[Violation], dict[str, str]]] = sorted(out, key=lambda x: x[0])
    moved = tuple((rank, v) for rank, vs, _ in ranks for v in vs)
    differ = []
    for name in sorted({n for _, _, d in ranks for n in d}):
        groups: dict[str | None, list[int]] = {}
        for rank, _, d in ranks:
            groups.setdefault(d.get(name), []).append(rank)
        if len(groups) > 1:
            differ.append((name, tuple(tuple(g) for g in groups.values())))
    return RanksReport(len(ranks), moved, tuple(differ))


def check_after_wrap(model: nn.Module, spec: FreezeSpec) -> list[Finding]:
    """After DDP, ``fully_shard`` or any re-registration: ``requires_grad`` and the BatchNorm
    policy still match ``spec``. Names are read through the wrapper (:func:`canonical`)."""
    findings = []
    for name, p in model.named_parameters():
        path = canonical(name)
        if covered_by(path, spec.frozen) and p.requires_grad:
            findings.append(Finding(
                "trainable_after_wrap", path,
                f"Parameter {path!r} is frozen by the spec but trainable after wrapping (the "
                "wrapper re-registered it, or requires_grad was set on it).",
                "freeze again after wrapping (spec.apply on the wrapped model's module), or set "
                "requires_grad=False on the parameters the wrapper created",
            ))  # fmt: skip
    for name, bn in iter_batchnorms(model):
        path = canonical(name)
        params = [canonical(f"{name}.{n}") for n, _ in bn.named_parameters()]
        frozen = bool(params) and all(covered_by(n, spec.frozen) for n in params)
        if frozen and spec.bn != "train" and bn_state(bn) == "train":
            findings.append(Finding(
                "bn_policy_after_wrap", path,
                f"BatchNorm {path!r} is frozen with bn={spec.bn!r} but updates its statistics "
                "after wrapping (the wrapper replaced or converted the layer).",
                "apply the spec after wrapping or after SyncBatchNorm conversion",
            ))  # fmt: skip
    return findings
