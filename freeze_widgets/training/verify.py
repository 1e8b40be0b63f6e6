"""Prove what training did: a snapshot before, a bitwise comparison after.

Every parameter and every BatchNorm buffer is copied to the CPU before training; afterwards each
is compared bit for bit, so a frozen weight that moved (a stale gradient with momentum, a
BatchNorm left in train mode) is caught, not estimated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..bn import bn_is_frozen, bn_state, iter_batchnorms
from .report import VerificationRow

__all__ = ["Snapshot", "snapshot", "verify"]


@dataclass
class Snapshot:
    """CPU copies of a model's parameters and BatchNorm buffers, taken before training."""

    params: dict[str, tuple[torch.Tensor, bool]]  # name -> (copy, frozen)
    buffers: dict[str, tuple[torch.Tensor, bool, str]]  # name -> (copy, bn frozen, policy)


def snapshot(model: nn.Module) -> Snapshot:
    """Copy every parameter (with its frozen flag) and every BatchNorm buffer (with its policy)."""
    params: dict[str, tuple[torch.Tensor, bool]] = {}
    for name, p in model.named_parameters():  # de-duplicated: tied tensors appear once
        params[name] = (p.detach().to("cpu", copy=True), not p.requires_grad)
    buffers: dict[str, tuple[torch.Tensor, bool, str]] = {}
    for path, mod in iter_batchnorms(model):
        frozen = bn_is_frozen(mod)
        policy = bn_state(mod)
        for bname, buf in mod.named_buffers(prefix=path, recurse=False):
            if buf is not None:
                buffers[bname] = (buf.detach().to("cpu", copy=True), frozen, policy)
    return Snapshot(params, buffers)


def verify(
    model: nn.Module, snap: Snapshot, unfrozen_at: Mapping[str, int], steps: int
) -> list[VerificationRow]:
    """One row per snapshotted tensor still in the model, parameters first.

    Args:
        model: The trained model.
        snap: Its :func:`snapshot` from before training.
        unfrozen_at: Group name -> 1-based epoch it was unfrozen at by the schedule; those
            tensors were allowed to change.
        steps: Optimizer steps taken (with none, an unchanged trainable tensor is fine).
    """
    return _parameter_rows(model, snap, unfrozen_at, steps) + _buffer_rows(model, snap, unfrozen_at)


def _unfrozen_epoch(unfrozen_at: Mapping[str, int], name: str) -> int | None:
    """The epoch a group containing tensor ``name`` was unfrozen at, or None."""
    for group, epoch in unfrozen_at.items():
        if group in ("", name) or name.startswith(group + "."):
            return epoch
    return None


def _parameter_rows(
    model: nn.Module, snap: Snapshot, unfrozen_at: Mapping[str, int], steps: int
) -> list[VerificationRow]:
    rows: list[VerificationRow] = []
    current = dict(model.named_parameters())
    for name, (before, frozen) in snap.params.items():
        p = current.get(name)
        if p is None:
            continue
        changed, delta = _diff(before, p)
        epoch = _unfrozen_epoch(unfrozen_at, name) if frozen else None
        kept_frozen = frozen and epoch is None
        if kept_frozen:
            status = "MOVED" if changed else "ok"
        elif changed or steps == 0:
            status = "ok"
        else:
            status = "no gradient path"
        note = f"unfrozen at epoch {epoch}" if epoch is not None else ""
        rows.append(VerificationRow(name, "parameter", kept_frozen, changed, delta, status, note))
    return rows


def _buffer_rows(
    model: nn.Module, snap: Snapshot, unfrozen_at: Mapping[str, int]
) -> list[VerificationRow]:
    rows: list[VerificationRow] = []
    current = dict(model.named_buffers())
    for name, (before, frozen, policy) in snap.buffers.items():
        buf = current.get(name)
        if buf is None:
            continue
        changed, delta = _diff(before, buf)
        kept_frozen = frozen and _unfrozen_epoch(unfrozen_at, name) is None
        status = "ok"
        if kept_frozen and changed:
            # Under the "train" policy running statistics of a frozen BN are meant to update.
            status = "updated" if policy == "train" else "MOVED"
        rows.append(VerificationRow(name, "buffer", kept_frozen, changed, delta, status, policy))
    return rows


def _diff(before: torch.Tensor, after: torch.Tensor) -> tuple[bool, float]:
    """Whether ``after`` differs bitwise from ``before``, and the largest absolute change."""
    after = after.detach().to("cpu")
    if before.shape != after.shape:
        return True, math.inf
    changed = not torch.equal(before, after)
    if not changed:
        return False, 0.0
    if not before.is_floating_point():  # num_batches_tracked: exact in double
        before, after = before.double(), after.double()
    delta = (after - before).abs()
    return True, float(delta.max()) if delta.numel() else 0.0
