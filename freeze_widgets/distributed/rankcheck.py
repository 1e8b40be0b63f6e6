"""Per-rank verification: snapshot before wrapping, compare after training, digest for ranks.

Each rank compares its own final (full, gathered for FSDP2) state with the snapshot it took
before wrapping, bitwise, through the one snapshot type (:class:`TensorSnapshot`) and the one
row type and status rule (:mod:`freeze_widgets.verify.rows`). Equality across ranks is checked
through a digest of every trainable tensor's bytes, so only a few bytes per tensor cross the
process group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from freeze_widgets.freezing.bn import bn_state, iter_batchnorms
from freeze_widgets.training.report import TrainingCurves
from freeze_widgets.verify.rows import VerificationRow, row_status
from freeze_widgets.verify.snapshot import TensorSnapshot, digest

__all__ = ["RankCheck", "Snapshot", "compare", "snapshot"]


@dataclass
class Snapshot:
    """Start values and what was frozen when the run started.

    ``tensors`` fingerprints (and copies) every parameter and BatchNorm buffer; it is compared
    by name with the final state, since wrapping may replace the tensor objects.
    ``frozen_params`` holds parameters frozen for the whole run; ``pending`` maps parameters
    frozen until a later epoch (trainable at learning rate 0 for DDP's sake) to that epoch.
    ``bn_buffers`` maps each BatchNorm buffer to its layer's policy when the layer is frozen
    (None when it trains).
    """

    tensors: TensorSnapshot
    frozen_params: set[str]
    pending: dict[str, int]
    bn_buffers: dict[str, str | None]
    bn_pending: dict[str, int] = field(default_factory=dict)


@dataclass
class RankCheck(TrainingCurves):
    """One rank's verdict, plain data so it can be gathered with ``all_gather_object``.

    ``rows`` are this rank's :class:`VerificationRow`; ``digests`` maps each
    trainable parameter to a digest of its final bytes; ``moved_while_pending`` names
    parameters that changed before their unfreeze epoch. ``rank`` is keyword-only: the
    loss and timing lists come first, from :class:`~freeze_widgets.training.report.TrainingCurves`.
    """

    rank: int = field(kw_only=True)
    rows: list[VerificationRow] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    moved_while_pending: list[str] = field(default_factory=list)
    unfreeze_events: list[tuple[int, str, float, int]] = field(default_factory=list)
    samples: int = 0
    epochs: int = 0
    total_steps: int = 0
    train_seconds: float = 0.0
    verify_seconds: float = 0.0
    gather_seconds: float = 0.0


def snapshot(model: nn.Module, pending: dict[str, int]) -> Snapshot:
    """Every parameter and BatchNorm buffer, before the model is wrapped."""
    tensors = TensorSnapshot.take(model, scope="all", keep_copies=True)
    frozen: set[str] = set()
    for name, p in model.named_parameters():  # de-duplicated: tied tensors appear once
        if not p.requires_grad and name not in pending:
            frozen.add(name)
    bn_buffers: dict[str, str | None] = {}
    bn_pending: dict[str, int] = {}
    for path, mod in iter_batchnorms(model):
        names = [f"{path}.{n}" if path else n for n, _ in mod.named_parameters()]
        is_frozen = bool(names) and all(n in frozen or n in pending for n in names)
        due = [pending[n] for n in names if n in pending]
        for bname, buf in mod.named_buffers(prefix=path, recurse=False):
            if buf is not None:
                bn_buffers[bname] = bn_state(mod) if is_frozen else None
                if due:  # statistics frozen until the layer's unfreeze epoch
                    bn_pending[bname] = min(due)
    return Snapshot(tensors, frozen, dict(pending), bn_buffers, bn_pending)


def compare(snap: Snapshot, final: dict[str, torch.Tensor], check: RankCheck) -> None:
    """Fill ``check.rows`` and ``check.digests`` from the final full state of this rank."""
    steps = check.total_steps
    for row in snap.tensors.compare_with(final):
        name = row.path
        if name in snap.bn_buffers:
            policy = snap.bn_buffers[name]
            if snap.bn_pending.get(name, check.epochs + 1) <= check.epochs:
                policy = None  # released at its unfreeze epoch: its statistics may update
            frozen = policy is not None
            status = row_status("buffer", frozen, row.moved, steps=steps, bn_policy=policy or "")
            check.rows.append(VerificationRow(name, "buffer", frozen, row.moved,
                                              row.max_abs_diff, status, policy or ""))  # fmt: skip
            continue
        epoch = snap.pending.get(name)
        # A group whose unfreeze epoch never came stayed frozen (and trainable for DDP only).
        reached = epoch is not None and epoch <= check.epochs
        note = f"unfrozen at epoch {epoch}" if reached else ""
        if epoch is not None and not reached:
            note = f"frozen until epoch {epoch}, not reached"
        frozen = name in snap.frozen_params or (epoch is not None and not reached)
        status = row_status("parameter", frozen, row.moved, steps=steps)
        check.rows.append(
            VerificationRow(name, "parameter", frozen, row.moved, row.max_abs_diff, status, note)
        )
        if not frozen:
            check.digests[name] = digest(final[name])


def full_tensors(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The full value of some parameters (DTensor shards gathered: a collective for FSDP2)."""
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name in names:
        p: Any = params[name]
        out[name] = (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().to("cpu")
    return out
