"""FreezeGuard: prove, during a user's own training, that frozen weights stayed frozen.

The guard fingerprints the frozen tensors (see :mod:`freeze_widgets.verify.snapshot`) and re-checks
them after every ``optimizer.step()`` (a step post-hook) or once at exit. When one moved it names
the cause it can establish from the optimizer and the model (docs/design.md, traps 1 and 2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from freeze_widgets.base.checks import require_module
from freeze_widgets.freezing.bn import iter_batchnorms
from freeze_widgets.verify.snapshot import TensorCheck, TensorSnapshot, _Entry

__all__ = ["FreezeGuard", "FrozenWeightMoved", "GuardReport", "Violation"]

log = logging.getLogger(__name__)

Cause = Literal["stale_grad", "momentum", "weight_decay", "bn_train_mode", "external_write"]

FIXES: dict[str, str] = {
    "stale_grad": "set .grad = None when freezing (freeze() does), or zero_grad(set_to_none=True)",
    "momentum": "build the optimizer from trainable parameters only, or drop the frozen "
    "parameter's optimizer state (optimizer.state.pop(p))",
    "weight_decay": "keep frozen parameters out of the optimizer (or in a group with "
    "weight_decay=0) and set their .grad to None",
    "bn_train_mode": 'freeze with bn="eval" or bn="frozen" so model.train() cannot put the '
    "BatchNorm back in train mode",
    "external_write": "find the in-place write (e.g. under torch.no_grad()) or the other "
    "optimizer that touches this tensor",
}

# State entries that move a parameter even when its gradient is zero (first moments); second
# moments (exp_avg_sq, square_avg, sum, ...) only scale an update that is zero anyway.
_MOMENTUM_KEYS = ("momentum_buffer", "exp_avg", "mu_product", "ax")


@dataclass(frozen=True)
class Violation:
    """A frozen tensor that moved.

    Attributes:
        path: Its name in ``named_parameters()`` or ``named_buffers()``.
        kind: ``"param"`` or ``"buffer"``.
        step: The optimizer step after which it was seen moved (None: checked at exit with no
            step taken).
        max_abs_diff: How far it moved since the last check; ``nan`` without ``keep_copies``.
        cause: The first established cause (``causes[0]``).
        causes: Every cause that applies, most direct first.
    """

    path: str
    kind: str
    step: int | None
    max_abs_diff: float
    cause: Cause
    causes: tuple[Cause, ...]

    @property
    def fix(self) -> str:
        return FIXES[self.cause]

    def __str__(self) -> str:
        when = f"after step {self.step}" if self.step is not None else "before any step"
        diff = (
            "by an unknown amount"
            if math.isnan(self.max_abs_diff)
            else (f"by up to {self.max_abs_diff:.3g}")
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
class GuardReport:
    """What a guard saw: how many tensors it watched, over how many steps, and what moved."""

    watched: int
    steps: int
    checks: int
    violations: tuple[Violation, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        head = (
            f"FreezeGuard: {self.watched} frozen tensors watched over {self.steps} optimizer "
            f"steps ({self.checks} checks)"
        )
        if self.ok:
            return f"{head}: nothing moved."
        lines = [f"{head}: {len(self.violations)} violations."]
        lines += [f"- {v}" for v in self.violations[:20]]
        if len(self.violations) > 20:
            lines.append(f"- ... {len(self.violations) - 20} more")
        return "\n".join(lines)


def _optimizers(optimizer: object) -> list[torch.optim.Optimizer]:
    if optimizer is None:
        return []
    if isinstance(optimizer, torch.optim.Optimizer):
        return [optimizer]
    if isinstance(optimizer, Iterable) and not isinstance(optimizer, (str, bytes)):
        items = list(optimizer)
        if all(isinstance(o, torch.optim.Optimizer) for o in items):
            return items
    raise TypeError(
        "optimizer must be a torch.optim.Optimizer, a list of them, or None (then every "
        f"optimizer's step is watched); got {type(optimizer).__name__}"
    )


def _param_causes(p: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> list[Cause]:
    """What in these optimizers can have moved frozen parameter ``p`` in their last step."""
    causes: list[Cause] = []
    for opt in optimizers:
        group = next((g for g in opt.param_groups if any(q is p for q in g["params"])), None)
        # Standard optimizers skip a parameter whose .grad is None: no grad, no update.
        if group is None or p.grad is None:
            continue
        if bool(p.grad.detach().ne(0).any()) and "stale_grad" not in causes:
            causes.append("stale_grad")
        state = opt.state.get(p, {})
        if (
            any(
                isinstance(state.get(k), torch.Tensor) and bool(state[k].ne(0).any())
                for k in _MOMENTUM_KEYS
            )
            and "momentum" not in causes
        ):
            causes.append("momentum")
        if float(group.get("weight_decay", 0.0) or 0.0) != 0.0 and "weight_decay" not in causes:
            causes.append("weight_decay")
    return causes


class FreezeGuard:
    """Watch a model's frozen tensors during training and report any that move.

    Use as a context manager, or call :meth:`start` / :meth:`check` / :meth:`stop` yourself.

    Example:
        >>> with FreezeGuard(model, optimizer, raise_on_violation=True) as guard:
        ...     train(model, optimizer)
        >>> print(guard.report)

    Args:
        model: The model whose frozen parameters (``requires_grad=False``) and frozen BatchNorm
            running statistics must not move.
        optimizer: The optimizer(s) to hook. None hooks every optimizer's step in the process
            (``torch.optim.optimizer.register_optimizer_step_post_hook``) while active.
        check: ``"step"`` checks after every optimizer step (and once more at exit);
            ``"exit"`` checks only at exit.
        raise_on_violation: Raise :class:`FrozenWeightMoved` at the check that sees a move.
        keep_copies: Keep full copies for an exact ``max_abs_diff`` (memory of the frozen
            tensors); without them the diff of a moved tensor is ``nan``.
        allow_bn_stats: Do not report running statistics of frozen BatchNorms left in train
            mode on purpose (the ``bn="train"`` policy).

    Parameters frozen while the guard is active are watched from the next step on (a step
    pre-hook snapshots them before the optimizer can touch them); parameters unfrozen are
    dropped. A moved tensor is re-baselined, so each violation reports one step's movement.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] | None = None,
        check: Literal["step", "exit"] = "step",
        *,
        raise_on_violation: bool = False,
        keep_copies: bool = False,
        allow_bn_stats: bool = False,
    ) -> None:
        self.model = require_module(model)
        self.optimizers = _optimizers(optimizer)
        if check not in ("step", "exit"):
            raise ValueError(f'check must be "step" or "exit"; got {check!r}')
        self.check_mode = check
        self.raise_on_violation = raise_on_violation
        self.keep_copies = keep_copies
        self.allow_bn_stats = allow_bn_stats
        self.violations: list[Violation] = []
        self.steps = 0
        self.checks = 0
        self._snapshot = TensorSnapshot(keep_copies)
        self._handles: list[RemovableHandle] = []
        self._bn_ran_training: set[str] = set()
        self._seen: list[torch.optim.Optimizer] = []
        self._active = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FreezeGuard:
        """Snapshot the frozen tensors and install the hooks."""
        if self._active:
            raise RuntimeError("this FreezeGuard is already active; call stop() first")
        self._snapshot = TensorSnapshot.take(
            self.model, keep_copies=self.keep_copies, allow_bn_stats=self.allow_bn_stats
        )
        for path, bn in iter_batchnorms(self.model):
            self._handles.append(bn.register_forward_pre_hook(self._bn_hook(path)))
        # Installed in both modes: at exit the step count and the optimizers seen stepping
        # still date and explain a move.
        self._install_step_hooks()
        self._active = True
        return self

    def stop(self) -> list[Violation]:
        """Check once more, remove every hook, and return all violations seen."""
        if not self._active:
            return list(self.violations)
        try:
            self.check()
        finally:
            self._remove_hooks()
        return list(self.violations)

    def __enter__(self) -> FreezeGuard:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:  # do not hide the error already on its way out
            self._remove_hooks()
            return
        self.stop()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._active = False

    def _install_step_hooks(self) -> None:
        if self.optimizers:
            for opt in self.optimizers:
                self._handles.append(opt.register_step_pre_hook(self._pre_step))
                self._handles.append(opt.register_step_post_hook(self._post_step))
        else:
            from torch.optim.optimizer import (
                register_optimizer_step_post_hook,
                register_optimizer_step_pre_hook,
            )

            self._handles.append(register_optimizer_step_pre_hook(self._pre_step))
            self._handles.append(register_optimizer_step_post_hook(self._post_step))

    def _bn_hook(self, path: str) -> Callable[[nn.Module, Any], None]:
        def record(module: nn.Module, args: Any) -> None:
            if module.training:
                self._bn_ran_training.add(path)

        return record

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._watch_newly_frozen()

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.steps += 1
        if not any(o is optimizer for o in self._seen):
            self._seen.append(optimizer)
        if self.check_mode == "step":
            self.check(optimizer)

    # ------------------------------------------------------------------ checking

    def _watch_newly_frozen(self) -> None:
        for path, p in self.model.named_parameters():
            if not p.requires_grad and path not in self._snapshot.entries:
                self._snapshot.add(_Entry(path, "param", p, True, "", ""))

    def check(self, optimizer: torch.optim.Optimizer | None = None) -> list[Violation]:
        """Compare the frozen tensors with their last reference; return the new violations.

        Args:
            optimizer: The optimizer that just stepped (causes are sought in it); by default
                the guard's optimizers, or every optimizer seen stepping.

        Raises:
            FrozenWeightMoved: something moved and ``raise_on_violation`` is set.
        """
        self.checks += 1
        for path, entry in list(self._snapshot.entries.items()):
            if entry.kind == "param" and entry.tensor.requires_grad:
                self._snapshot.drop(path)  # unfrozen on purpose since the snapshot
        moved = self._snapshot.moved()
        optimizers = [optimizer] if optimizer is not None else self.optimizers or self._seen
        new = [self._violation(row, optimizers) for row in moved]
        self._snapshot.rebase([row.path for row in moved])
        self._bn_ran_training.clear()
        self.violations.extend(new)
        for v in new:
            log.warning("%s", v)
        if new and self.raise_on_violation:
            raise FrozenWeightMoved(new)
        return new

    def _violation(self, row: TensorCheck, optimizers: list[torch.optim.Optimizer]) -> Violation:
        causes: list[Cause]
        if row.kind == "param":
            causes = _param_causes(self._snapshot.entries[row.path].tensor, optimizers)
        else:
            causes = ["bn_train_mode"] if row.module in self._bn_ran_training else []
        causes = causes or ["external_write"]
        step = self.steps if self.steps else None
        return Violation(row.path, row.kind, step, row.max_abs_diff, causes[0], tuple(causes))

    @property
    def watched(self) -> int:
        """How many tensors are being watched now."""
        return len(self._snapshot)

    @property
    def report(self) -> GuardReport:
        return GuardReport(self.watched, self.steps, self.checks, tuple(self.violations))

    def rows(self) -> list[TensorCheck]:
        """Per-tensor rows (path, kind, moved, max diff) against the current reference."""
        return self._snapshot.compare()
