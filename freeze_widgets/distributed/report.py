"""Merging the ranks' verdicts into one ``FineTuneReport`` (and back from JSON)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from freeze_widgets.distributed.rankcheck import RankCheck
from freeze_widgets.training import FineTuneReport, UnfreezeEvent
from freeze_widgets.training.report import TrainingCurves
from freeze_widgets.verify.rows import VerificationRow, VerificationStatus, row_status

__all__ = ["DistributedFineTuneReport", "RankVerdict", "merge_ranks"]

RANKS_DIFFER: VerificationStatus = "RANKS DIFFER"


@dataclass(frozen=True)
class RankVerdict:
    """What one rank saw: frozen tensors that moved, trainable ones that changed."""

    rank: int
    frozen_unchanged: bool
    moved: list[str]
    trainable_changed: int
    trainable_total: int
    final_loss: float | None
    steps: int
    train_seconds: float
    verify_seconds: float
    gather_seconds: float = 0.0


@dataclass
class DistributedFineTuneReport(FineTuneReport):
    """A :class:`~freeze_widgets.training.FineTuneReport` merged over ranks.

    Losses and accuracies are rank 0's. A verification row is ``"MOVED"`` when a frozen tensor
    changed on any rank (``note`` names the ranks) and ``"RANKS DIFFER"`` when a trainable
    parameter ended different across ranks; BatchNorm statistics of trained layers are rank
    0's (each rank normalises its own batches).
    """

    strategy: str = "ddp"
    nproc: int = 1
    backend: str = "gloo"
    ranks: list[RankVerdict] = field(default_factory=list)
    verify_seconds: float = 0.0
    launch_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No frozen tensor moved on any rank and every trainable one agrees across ranks."""
        return not any(r.status in ("MOVED", RANKS_DIFFER) for r in self.verification)

    @property
    def ranks_agree(self) -> bool:
        return not any(r.status == RANKS_DIFFER for r in self.verification)

    def summary(self) -> str:
        head = f"{self.strategy} on {self.nproc} process(es) ({self.backend})"
        agree = (
            "trainable weights identical on every rank"
            if self.ranks_agree
            else ("trainable weights DIFFER across ranks")
        )
        per_rank = [
            f"rank {v.rank}: "
            + ("frozen unchanged" if v.frozen_unchanged else f"MOVED {', '.join(v.moved[:3])}")
            + f", {v.trainable_changed}/{v.trainable_total} trainable changed"
            for v in self.ranks
        ]
        return "\n".join([head, *per_rank, agree, super().summary()])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (``from_dict`` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistributedFineTuneReport:
        data = dict(data)
        data["verification"] = [VerificationRow(**r) for r in data.get("verification", [])]
        data["unfreeze_events"] = [UnfreezeEvent(**e) for e in data.get("unfreeze_events", [])]
        data["ranks"] = [RankVerdict(**v) for v in data.get("ranks", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _row(
    name: str, checks: list[RankCheck], by_rank: list[dict[str, VerificationRow]]
) -> VerificationRow:
    rows = [rows_of[name] for rows_of in by_rank if name in rows_of]
    first = rows[0]
    moved_on = [
        c.rank for c, r in zip(checks, by_rank, strict=True) if name in r and r[name].changed
    ]
    steps = checks[0].total_steps
    if first.was_frozen:
        note = first.note
        policy = note if first.kind == "buffer" else ""
        status = row_status(first.kind, True, bool(moved_on), steps=steps, bn_policy=policy)
        if moved_on:
            note = f"{note}; changed on rank(s) {', '.join(map(str, moved_on))}".lstrip("; ")
        delta = max(r.max_abs_change for r in rows)
        return VerificationRow(name, first.kind, True, bool(moved_on), delta, status, note)
    if first.kind == "buffer":
        return dataclasses.replace(first, status="ok", note="rank 0's statistics")
    status, note = first.status, first.note
    if len({c.digests.get(name) for c in checks}) > 1:
        status = RANKS_DIFFER
    if any(name in c.moved_while_pending for c in checks):
        status, note = "MOVED", f"{note}; changed before its unfreeze epoch".lstrip("; ")
    return dataclasses.replace(first, status=status, note=note)


def _verdict(check: RankCheck) -> RankVerdict:
    moved = [r.name for r in check.rows if r.status == "MOVED"]
    moved += check.moved_while_pending
    trainable = [r for r in check.rows if r.kind == "parameter" and not r.was_frozen]
    return RankVerdict(
        rank=check.rank,
        frozen_unchanged=not moved,
        moved=moved,
        trainable_changed=sum(1 for r in trainable if r.changed),
        trainable_total=len(trainable),
        final_loss=check.step_loss[-1] if check.step_loss else None,
        steps=len(check.step_loss),
        train_seconds=check.train_seconds,
        verify_seconds=check.verify_seconds,
        gather_seconds=check.gather_seconds,
    )


def merge_ranks(checks: list[RankCheck], **meta: Any) -> DistributedFineTuneReport:
    """One report from every rank's :class:`RankCheck` (sorted by rank; rank 0 first)."""
    checks = sorted(checks, key=lambda c: c.rank)
    first = checks[0]
    by_rank = [{r.name: r for r in c.rows} for c in checks]
    report = DistributedFineTuneReport(**meta)
    report.verification = [_row(r.name, checks, by_rank) for r in first.rows]
    report.ranks = [_verdict(c) for c in checks]
    for curve in dataclasses.fields(TrainingCurves):  # losses, accuracies, times: rank 0's
        setattr(report, curve.name, list(getattr(first, curve.name)))
    report.unfreeze_events = [UnfreezeEvent(*e) for e in first.unfreeze_events]
    report.steps, report.total_steps = len(first.step_loss), first.total_steps
    report.epochs = first.epochs
    report.samples = sum(c.samples for c in checks)
    report.total_seconds = max(c.train_seconds for c in checks)
    secs = report.total_seconds
    report.samples_per_second = report.samples / secs if secs > 0 else 0.0
    report.verify_seconds = max(c.verify_seconds for c in checks)
    return report
