"""Prove what training did: a snapshot before, a bitwise comparison after.

Every parameter and every BatchNorm buffer is snapshotted before training (an exact fingerprint
plus a copy); afterwards each is compared bit for bit, so a frozen weight that moved (a stale
gradient with momentum, a BatchNorm left in train mode) is caught, not estimated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from torch import nn

from freeze_widgets.verify.snapshot import TensorCheck, TensorSnapshot

__all__ = [
    "VerificationRow",
    "VerificationStatus",
    "covered_by",
    "row_status",
    "snapshot",
    "verify",
]

VerificationStatus = Literal[
    "ok",
    "MOVED",
    "no gradient path",
    "updated",
    "RANKS DIFFER",
    "MISSING",
    "UNEXPECTED",
    "UNREADABLE",
    "BAD SHAPE",
]
"""A verification row's verdict ("RANKS DIFFER": trainable tensors unequal across processes;
the last four only for checkpoints: not saved, saved but not in the model, saved but not
readable, saved with a shape the model cannot take)."""


@dataclass(frozen=True)
class VerificationRow:
    """One parameter or BatchNorm buffer compared bitwise with its pre-training snapshot.

    The one row type of every verification: ``finetune``, each rank of a distributed run and
    the merged report, and checkpoints. ``status`` is ``"ok"``, ``"MOVED"`` (frozen but
    changed), ``"no gradient path"`` (trainable but unchanged), ``"updated"`` (statistics of a
    frozen BatchNorm under the "train" policy, which is expected to change) or ``"RANKS
    DIFFER"`` (trainable, but not equal on every rank).
    """

    name: str
    kind: str
    was_frozen: bool
    changed: bool
    max_abs_change: float
    status: VerificationStatus
    note: str = ""


def covered_by(name: str, paths: Iterable[str]) -> bool:
    """Whether tensor ``name`` is one of ``paths`` or inside one (``""`` covers everything)."""
    return any(p in ("", name) or name.startswith(p + ".") for p in paths)


def row_status(
    kind: str, frozen: bool, changed: bool, *, steps: int, bn_policy: str = ""
) -> VerificationStatus:
    """The one status rule: what a tensor's change means given whether it was frozen.

    Args:
        kind: ``"parameter"`` or ``"buffer"``.
        frozen: Whether it was meant to stay put.
        changed: Whether any bit changed.
        steps: Optimizer steps taken (with none, an unchanged trainable tensor is fine).
        bn_policy: For a buffer, its BatchNorm's policy (under ``"train"`` the statistics of a
            frozen layer are meant to update).
    """
    if frozen:
        if not changed:
            return "ok"
        return "updated" if kind == "buffer" and bn_policy == "train" else "MOVED"
    if kind == "buffer" or changed or steps == 0:
        return "ok"
    return "no gradient path"


def snapshot(model: nn.Module) -> TensorSnapshot:
    """Every parameter (with its frozen flag) and every BatchNorm buffer (with its policy).

    The same snapshot the :class:`~freeze_widgets.verify.guard.FreezeGuard` uses (one mechanism),
    with full copies kept so the report can say how far a tensor moved.
    """
    return TensorSnapshot.take(model, scope="all", keep_copies=True)


def verify(
    snap: TensorSnapshot, unfrozen_at: Mapping[str, int], steps: int
) -> list[VerificationRow]:
    """One row per snapshotted tensor, parameters first.

    Args:
        snap: The model's :func:`snapshot` from before training (it holds references to the
            model's tensors, so it compares their values now).
        unfrozen_at: Group name -> 1-based epoch it was unfrozen at by the schedule; those
            tensors were allowed to change.
        steps: Optimizer steps taken (with none, an unchanged trainable tensor is fine).
    """
    checks = snap.compare()
    params = [_parameter_row(c, unfrozen_at, steps) for c in checks if c.kind == "param"]
    buffers = [_buffer_row(c, unfrozen_at) for c in checks if c.kind == "buffer"]
    return params + buffers


def _unfrozen_epoch(unfrozen_at: Mapping[str, int], name: str) -> int | None:
    """The epoch a group containing tensor ``name`` was unfrozen at, or None."""
    for group, epoch in unfrozen_at.items():
        if covered_by(name, [group]):
            return epoch
    return None


def _parameter_row(
    check: TensorCheck, unfrozen_at: Mapping[str, int], steps: int
) -> VerificationRow:
    epoch = _unfrozen_epoch(unfrozen_at, check.path) if check.frozen else None
    kept_frozen = check.frozen and epoch is None
    status = row_status("parameter", kept_frozen, check.moved, steps=steps)
    note = f"unfrozen at epoch {epoch}" if epoch is not None else ""
    return VerificationRow(
        check.path, "parameter", kept_frozen, check.moved, check.max_abs_diff, status, note
    )


def _buffer_row(check: TensorCheck, unfrozen_at: Mapping[str, int]) -> VerificationRow:
    kept_frozen = check.frozen and _unfrozen_epoch(unfrozen_at, check.path) is None
    status = row_status("buffer", kept_frozen, check.moved, steps=0, bn_policy=check.bn_policy)
    return VerificationRow(
        check.path, "buffer", kept_frozen, check.moved, check.max_abs_diff, status,
        check.bn_policy,
    )  # fmt: skip
