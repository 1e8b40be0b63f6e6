"""What a fine-tune run reports: step and unfreeze events, verification rows, the report itself.

Pure data and text: nothing here touches a model. :class:`FineTuneReport` is what
:func:`~freeze_widgets.training.finetune` returns and what the Jupyter panel renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from freeze_widgets.checks.findings import Finding
from freeze_widgets.verify.rows import VerificationRow, VerificationStatus

__all__ = [
    "FineTuneReport",
    "NonFiniteLossError",
    "StepEvent",
    "TrainingCurves",
    "UnfreezeEvent",
    "VerificationRow",
    "VerificationStatus",
]


@dataclass(frozen=True)
class StepEvent:
    """Passed to ``callback`` after every optimizer step."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    acc: float
    elapsed: float
    eta_seconds: float
    param_groups: int = 1
    lrs: tuple[float, ...] = ()
    """Each param group's learning rate after the step (the order of ``param_groups``)."""


@dataclass(frozen=True)
class UnfreezeEvent:
    """One group unfrozen by the schedule at the start of ``epoch`` (1-based)."""

    epoch: int
    group: str
    lr: float
    tensors: int


@dataclass
class TrainingCurves:
    """Loss, accuracy and seconds of every step and every epoch, in order.

    Shared by :class:`FineTuneReport` and each rank's check of a distributed run.
    """

    step_loss: list[float] = field(default_factory=list)
    step_acc: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    epoch_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


@dataclass
class FineTuneReport(TrainingCurves):
    """What :func:`finetune` did, with a bitwise verification of every parameter and BN buffer."""

    steps: int = 0
    total_steps: int = 0
    epochs: int = 0
    samples: int = 0
    total_seconds: float = 0.0
    samples_per_second: float = 0.0
    stopped_early: bool = False
    stop_reason: str | None = None
    head_replaced: str | None = None
    num_classes: int | None = None
    bn_policy: str = "none"
    optimizer: str = ""
    lr: float = 0.0
    unfreeze_events: list[UnfreezeEvent] = field(default_factory=list)
    frozen_prefix: list[str] = field(default_factory=list)
    cached_epochs: list[int] = field(default_factory=list)
    verification: list[VerificationRow] = field(default_factory=list)
    error: str | None = None
    # audit_optimizer after the run: the same check users run on their own loops (issue 13)
    optimizer_findings: list[Finding] = field(default_factory=list)

    # ------------------------------------------------------------------ derived

    @property
    def ok(self) -> bool:
        """No frozen parameter moved and no frozen "eval"/"frozen" BatchNorm statistic changed."""
        return not any(row.status == "MOVED" for row in self.verification)

    @property
    def final_loss(self) -> float | None:
        return self.step_loss[-1] if self.step_loss else None

    @property
    def final_acc(self) -> float | None:
        return self.epoch_acc[-1] if self.epoch_acc else None

    @property
    def moved(self) -> list[VerificationRow]:
        return [row for row in self.verification if row.status == "MOVED"]

    @property
    def no_gradient_path(self) -> list[VerificationRow]:
        return [row for row in self.verification if row.status == "no gradient path"]

    def rows(self, kind: str, *, frozen: bool) -> list[VerificationRow]:
        return [r for r in self.verification if r.kind == kind and r.was_frozen == frozen]

    def verification_lines(self) -> list[str]:
        """The verification part of :meth:`summary`, one statement per line."""
        frozen_p = self.rows("parameter", frozen=True)
        trainable_p = self.rows("parameter", frozen=False)
        moved_p = [r for r in frozen_p if r.status == "MOVED"]
        lines = []
        if moved_p:
            names = ", ".join(r.name for r in moved_p[:5]) + (" ..." if len(moved_p) > 5 else "")
            lines.append(
                f"{len(moved_p)} of {len(frozen_p)} frozen parameter tensors MOVED: {names}"
            )
        elif frozen_p:
            lines.append(f"all {len(frozen_p)} frozen parameter tensors bitwise unchanged")
        else:
            lines.append("no frozen parameters")
        changed_t = sum(1 for r in trainable_p if r.changed)
        text = f"{changed_t} trainable changed"
        if changed_t < len(trainable_p):
            text += f", {len(trainable_p) - changed_t} trainable unchanged (no gradient path)"
        lines[-1] += f"; {text}"
        frozen_b = self.rows("buffer", frozen=True)
        if not frozen_b:
            lines.append("no frozen BatchNorm layers")
        else:
            policies = sorted({r.note for r in frozen_b})
            pol = ", ".join(repr(p) for p in policies)
            moved_b = [r for r in frozen_b if r.status == "MOVED"]
            updated_b = [r for r in frozen_b if r.status == "updated" and r.changed]
            if moved_b:
                lines.append(
                    f"frozen BatchNorm statistics MOVED in {len(moved_b)} buffers "
                    f"(policy {pol}): {', '.join(r.name for r in moved_b[:3])}"
                )
            elif updated_b:
                lines.append(
                    f"frozen BatchNorm statistics CHANGED (policy {pol}: running statistics "
                    "keep updating)"
                )
            else:
                lines.append(f"frozen BatchNorm statistics unchanged (policy {pol})")
        return lines

    def summary(self) -> str:
        """A few lines: what ran, what was replaced or unfrozen, and the verification verdict."""
        epochs = f"{self.epochs} epoch" + ("" if self.epochs == 1 else "s")
        lines = [
            f"trained {self.steps} steps ({epochs}) in {self.total_seconds:.1f} s, "
            f"{self.samples_per_second:.0f} samples/s"
        ]
        if self.final_loss is not None:
            acc = (
                f", accuracy {self.final_acc:.1%} (mean over the last epoch's batches)"
                if self.final_acc is not None
                else ""
            )
            lines[0] += f"; final loss {self.final_loss:.4g}{acc}"
        if self.stopped_early:
            lines.append(
                f"stopped early ({self.stop_reason}) after {self.steps} of {self.total_steps} "
                "steps: "
                + (
                    "the model keeps what was trained"
                    if self.error is None
                    else "the run failed and the model was restored as it was before it"
                )
            )
        if self.head_replaced:
            lines.append(f"head {self.head_replaced}")
        lines += [
            f"epoch {e.epoch}: unfroze {e.group} at lr {e.lr:.3g}" for e in self.unfreeze_events
        ]
        lines += self.verification_lines()
        lines += [f"optimizer audit: {finding}" for finding in self.optimizer_findings]
        lines.append("OK: frozen weights did not move" if self.ok else "FAILED: see MOVED rows")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class NonFiniteLossError(FloatingPointError, ValueError):
    """The loss became NaN or infinite; ``report`` holds what happened up to that step."""

    def __init__(self, message: str, report: FineTuneReport) -> None:
        super().__init__(message)
        self.report = report
