"""What a :class:`~freeze_widgets.verify.guard.FreezeGuard` reports: violations, causes, fixes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from freeze_widgets.checks.optimizer_state import carries_momentum, optimizer_state

__all__ = [
    "Cause",
    "FrozenWeightMoved",
    "GuardReport",
    "RanksDisagree",
    "RanksReport",
    "Violation",
    "param_causes",
]

Cause = Literal[
    "stale_grad", "momentum", "weight_decay", "bn_train_mode", "replaced", "external_write"
]

FIXES: dict[str, str] = {
    "stale_grad": "set .grad = None when freezing (freeze() does), or zero_grad(set_to_none=True)",
    "momentum": "build the optimizer from trainable parameters only, or drop the frozen "
    "parameter's optimizer state (optimizer.state.pop(p))",
    "weight_decay": "keep frozen parameters out of the optimizer (or in a group with "
    "weight_decay=0) and set their .grad to None",
    "bn_train_mode": 'freeze with bn="eval" or bn="frozen" so model.train() cannot put the '
    "BatchNorm back in train mode",
    "replaced": "the frozen nn.Parameter was replaced by one holding other values; load the "
    "values into the existing parameter (load_state_dict, or p.data.copy_ before freezing)",
    "external_write": "find the in-place write (e.g. under torch.no_grad()) or the other "
    "optimizer that touches this tensor",
}


@dataclass(frozen=True)
class Violation:
    """A frozen tensor that moved.

    Attributes:
        path: Its name in ``named_parameters()`` or ``named_buffers()``.
        kind: ``"param"`` or ``"buffer"``.
        step: The optimizer step after which it was seen moved (None: seen with no optimizer
            step seen by the guard).
        max_abs_diff: How far it moved since the last check; ``nan`` without ``keep_copies``.
        cause: The first established cause (``causes[0]``).
        causes: Every cause that applies, most direct first.
        since: The step at which it was last seen unchanged (None: at the start), so a tensor
            checked only every N steps says in which window it moved.
    """

    path: str
    kind: str
    step: int | None
    max_abs_diff: float
    cause: Cause
    causes: tuple[Cause, ...]
    since: int | None = None

    @property
    def fix(self) -> str:
        return FIXES[self.cause]

    def __str__(self) -> str:
        if self.step is None:
            when = "with no optimizer step seen (only torch.optim.Optimizer steps are hooked)"
        elif self.since is not None and self.since < self.step - 1:
            when = f"between step {self.since} and step {self.step}"
        else:
            when = f"after step {self.step}"
        diff = (
            "by an unknown amount"
            if math.isnan(self.max_abs_diff)
            else f"by up to {self.max_abs_diff:.3g}"
        )
        also = f" (also {', '.join(self.causes[1:])})" if len(self.causes) > 1 else ""
        return (
            f"frozen {self.kind} {self.path!r} moved {diff} {when}: {self.cause}{also}. "
            f"Fix: {self.fix}."
        )


class FrozenWeightMoved(RuntimeError):
    """Raised by a guard with ``raise_on_violation=True``; ``.violation`` is the first one."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        self.violation = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{self.violation}{more}")


@dataclass(frozen=True)
class RanksReport:
    """Every rank's verdict, gathered.

    Attributes:
        world: Number of ranks.
        violations: ``(rank, violation)`` for every frozen tensor that moved on some rank.
        differ: ``(name, groups)`` for each trainable tensor not equal on every rank; ``groups``
            lists the ranks that agree with each other, e.g. ``((0,), (1,))``.
    """

    world: int
    violations: tuple[tuple[int, Violation], ...] = field(default=())
    differ: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations and not self.differ

    def __str__(self) -> str:
        if self.ok:
            return f"{self.world} ranks: frozen tensors held and trainable tensors agree."
        lines = [f"{self.world} ranks:"]
        lines += [f"- rank {rank}: {v}" for rank, v in self.violations]
        for name, groups in self.differ:
            split = " vs ".join("ranks " + ",".join(map(str, g)) for g in groups)
            lines.append(f"- trainable {name!r} differs across ranks ({split}): the ranks train "
                         "different models; check gradient synchronisation")  # fmt: skip
        return "\n".join(lines)


class RanksDisagree(RuntimeError):
    """Raised on every rank by a guard with ``raise_on_violation=True`` at a gathered check."""

    def __init__(self, report: RanksReport) -> None:
        self.report = report
        super().__init__(str(report))


@dataclass(frozen=True)
class GuardReport:
    """What a guard saw: what it watched, how often it checked each tensor, and what moved.

    Attributes:
        watched: Frozen tensors watched at any time during the run (one later unfrozen counts).
        steps: Optimizer steps seen.
        checks: Checks run (after a step, every ``full_every`` steps, at exit).
        violations: Frozen tensors that moved.
        full_every: Every how many steps every watched tensor was checked (0: only at exit).
        full_checks: How many checks covered every watched tensor.
        checked: ``(path, times checked)`` per watched tensor: tensors the steps could move
            (held by a hooked optimizer, with a ``.grad``, or a BatchNorm in train mode) are
            checked after each such step; the rest only in the full checks.
        unfrozen: Frozen parameters that became trainable during the run (watched until then).
        ranks: Under a process group, every rank's verdict gathered at the last full check.
    """

    watched: int
    steps: int
    checks: int
    violations: tuple[Violation, ...] = field(default=())
    full_every: int = 0
    full_checks: int = 0
    checked: tuple[tuple[str, int], ...] = field(default=())
    unfrozen: tuple[str, ...] = field(default=())
    ranks: RanksReport | None = None

    @property
    def ok(self) -> bool:
        return not self.violations and (self.ranks is None or self.ranks.ok)

    def cadence(self) -> str:
        """One line: how many tensors were checked after every step, how many less often."""
        every = sum(1 for _, n in self.checked if n > self.full_checks)
        rest = len(self.checked) - every
        often = f"every {self.full_every} steps and at exit" if self.full_every else "at exit"
        return (
            f"{every} checked after the steps that could move them, {rest} only {often} "
            f"({self.full_checks} full checks)"
        )

    def __str__(self) -> str:
        head = (
            f"FreezeGuard: {self.watched} frozen tensors watched over {self.steps} optimizer "
            f"steps ({self.checks} checks; {self.cadence()})"
        )
        tail = []
        if self.unfrozen:
            shown = ", ".join(self.unfrozen[:5]) + (" ..." if len(self.unfrozen) > 5 else "")
            tail.append(f"{len(self.unfrozen)} became trainable during the run: {shown}")
        if self.ranks is not None:
            tail.append(str(self.ranks))
        if self.ok:
            return "\n".join([f"{head}: nothing moved.", *tail])
        lines = [f"{head}: {len(self.violations)} violations on this rank."
                 if self.ranks else f"{head}: {len(self.violations)} violations."]  # fmt: skip
        lines += [f"- {v}" for v in self.violations[:20]]
        if len(self.violations) > 20:
            lines.append(f"- ... {len(self.violations) - 20} more")
        return "\n".join(lines + tail)


def param_causes(p: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> list[Cause]:
    """What in these optimizers can have moved frozen parameter ``p`` in their last step."""
    causes: list[Cause] = []
    for opt in optimizers:
        group = next((g for g in opt.param_groups if any(q is p for q in g["params"])), None)
        # Standard optimizers skip a parameter whose .grad is None: no grad, no update.
        if group is None or p.grad is None:
            continue
        found: list[Cause] = []
        if bool(p.grad.detach().ne(0).any()):
            found.append("stale_grad")
        if carries_momentum(optimizer_state(opt, p)):
            found.append("momentum")
        if float(group.get("weight_decay", 0.0) or 0.0) != 0.0:
            found.append("weight_decay")
        causes += [c for c in found if c not in causes]
    return causes
