"""Prove what training did: a snapshot before, a bitwise comparison after.

Every parameter and every BatchNorm buffer is snapshotted before training (an exact fingerprint
plus a copy); afterwards each is compared bit for bit, so a frozen weight that moved (a stale
gradient with momentum, a BatchNorm left in train mode) is caught, not estimated.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from freeze_widgets.training.report import VerificationRow, VerificationStatus
from freeze_widgets.verify.snapshot import TensorCheck, TensorSnapshot

__all__ = ["snapshot", "verify"]


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
        if group in ("", name) or name.startswith(group + "."):
            return epoch
    return None


def _parameter_row(
    check: TensorCheck, unfrozen_at: Mapping[str, int], steps: int
) -> VerificationRow:
    epoch = _unfrozen_epoch(unfrozen_at, check.path) if check.frozen else None
    kept_frozen = check.frozen and epoch is None
    status: VerificationStatus
    if kept_frozen:
        status = "MOVED" if check.moved else "ok"
    elif check.moved or steps == 0:
        status = "ok"
    else:
        status = "no gradient path"
    note = f"unfrozen at epoch {epoch}" if epoch is not None else ""
    return VerificationRow(
        check.path, "parameter", kept_frozen, check.moved, check.max_abs_diff, status, note
    )


def _buffer_row(check: TensorCheck, unfrozen_at: Mapping[str, int]) -> VerificationRow:
    kept_frozen = check.frozen and _unfrozen_epoch(unfrozen_at, check.path) is None
    status: VerificationStatus = "ok"
    if kept_frozen and check.moved:
        # Under the "train" policy running statistics of a frozen BN are meant to update.
        status = "updated" if check.bn_policy == "train" else "MOVED"
    return VerificationRow(
        check.path, "buffer", kept_frozen, check.moved, check.max_abs_diff, status,
        check.bn_policy,
    )  # fmt: skip
