"""FreezeGuard: prove, during a user's own training, that frozen weights stayed frozen.

The guard fingerprints the frozen tensors (see :mod:`freeze_widgets.verify.snapshot`). After each
``optimizer.step()`` it re-checks only what that step could have moved: frozen tensors the
stepping optimizer holds, frozen tensors with a ``.grad``, and statistics of BatchNorm layers in
train mode. Everything else can move only by a write from outside (an in-place op,
``load_state_dict``, a replaced ``nn.Parameter``), which the full check every ``full_every``
steps and at exit finds, saying between which steps it happened. When a tensor moved the guard
names the cause it can establish from the optimizer and the model (docs/design.md, traps 1, 2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from freeze_widgets.base.checks import require_materialized, require_module
from freeze_widgets.checks.optimizer_state import optimizer_list
from freeze_widgets.freezing.bn import bn_is_frozen, bn_state, iter_batchnorms
from freeze_widgets.verify.ranks import gather, group_active
from freeze_widgets.verify.snapshot import TensorCheck, TensorSnapshot, local
from freeze_widgets.verify.violations import (
    Cause,
    FrozenWeightMoved,
    GuardReport,
    RanksDisagree,
    RanksReport,
    Violation,
    param_causes,
)

__all__ = ["FreezeGuard", "FrozenWeightMoved", "GuardReport", "Violation"]

log = logging.getLogger(__name__)

DEFAULT_FULL_EVERY = 100


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
        optimizer: The optimizer(s) to hook (one, or a list). None hooks every optimizer's
            step in the process while active.
        check: ``"step"`` checks after every optimizer step what that step could move, and
            everything every ``full_every`` steps and at exit; ``"exit"`` checks only at exit.
        raise_on_violation: Raise :class:`FrozenWeightMoved` at the check that sees a move.
        keep_copies: Keep full copies for an exact ``max_abs_diff`` (memory of the frozen
            tensors); without them the diff of a moved tensor is ``nan``.
        allow_bn_stats: Do not report running statistics of frozen BatchNorms left in train
            mode on purpose (the ``bn="train"`` policy).
        full_every: Check every watched tensor every this many steps (0: only at exit).

    Parameters frozen while the guard is active, and BatchNorm layers whose parameters are
    frozen while it is active, are watched from the next step on (a step pre-hook snapshots
    them before the optimizer can touch them); parameters unfrozen are dropped. A frozen
    ``nn.Parameter`` replaced by another object is compared with what it held and followed.
    A moved tensor is re-baselined, so each violation reports one window's movement.

    Under an initialised process group (DDP, FSDP2, a framework's strategy) each rank checks its
    own tensors (local shards) and every full check gathers all ranks' verdicts into
    ``report.ranks``: frozen tensors that moved on any rank, and trainable tensors that should be
    replicated but differ across ranks (by digest; no tensor is sent). Every rank must then run
    the same number of steps. ``raise_on_violation`` raises :class:`RanksDisagree` at those
    gathered checks, on every rank at once, so that no rank waits for one that stopped.
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
        full_every: int = DEFAULT_FULL_EVERY,
    ) -> None:
        self.model = require_module(model)
        self.optimizers = optimizer_list(optimizer, allow_none=True)
        if check not in ("step", "exit"):
            raise ValueError(f'check must be "step" or "exit"; got {check!r}')
        if isinstance(full_every, bool) or not isinstance(full_every, int) or full_every < 0:
            raise ValueError(
                f"full_every must be an int >= 0 (0: only at exit); got {full_every!r}"
            )
        self.check_mode = check
        self.raise_on_violation = raise_on_violation
        self.keep_copies = keep_copies
        self.allow_bn_stats = allow_bn_stats
        self.full_every = full_every
        self.violations: list[Violation] = []
        self.steps = 0
        self.checks = 0
        self.full_checks = 0
        self._snapshot = TensorSnapshot(keep_copies)
        self._handles: list[RemovableHandle] = []
        self._bn_ran_training: set[str] = set()
        self._bns: dict[str, nn.Module] = {}
        self._bn_watched: set[str] = set()  # BatchNorms whose statistics are watched
        self._checked: dict[str, int] = {}  # path -> times checked (kept after a drop)
        self._last_ok: dict[str, int] = {}  # path -> step it was last seen unchanged
        self._seen: list[torch.optim.Optimizer] = []
        self._active = False
        self.unfrozen: list[str] = []
        self.ranks: RanksReport | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FreezeGuard:
        """Snapshot the frozen tensors and install the hooks."""
        if self._active:
            raise RuntimeError("this FreezeGuard is already active; call stop() first")
        require_materialized(self.model, "guard")
        self._snapshot = TensorSnapshot.take(
            self.model, keep_copies=self.keep_copies, allow_bn_stats=self.allow_bn_stats
        )
        for path, entry in self._snapshot.entries.items():
            self._checked.setdefault(path, 0)
            if entry.kind == "buffer":
                self._bn_watched.add(entry.module)
        for path, bn in iter_batchnorms(self.model):
            self._hook_bn(path, bn)
        # Installed in both modes: at exit the step count and the optimizers seen stepping
        # still date and explain a move.
        self._install_step_hooks()
        self._active = True
        return self

    def stop(self) -> list[Violation]:
        """Check everything once more, remove every hook, and return all violations seen."""
        if not self._active:
            return list(self.violations)
        try:
            self._refresh()
            self.check()
        finally:
            self.abort()
        return list(self.violations)

    def abort(self) -> None:
        """Remove every hook without a final check (training is failing already)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    def __enter__(self) -> FreezeGuard:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:  # do not hide the error already on its way out
            self.abort()
            return
        self.stop()

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

    def _hook_bn(self, path: str, bn: nn.Module) -> None:
        if self._bns.get(path) is bn:
            return
        self._bns[path] = bn
        self._handles.append(bn.register_forward_pre_hook(self._bn_hook(path)))

    def _bn_hook(self, path: str) -> Callable[[nn.Module, Any], None]:
        def record(module: nn.Module, args: Any) -> None:
            # A layer frozen since the last step is watched before this forward updates it.
            if path not in self._bn_watched and bn_is_frozen(module):
                self._watch_bn(path, module)
            if module.training:
                self._bn_ran_training.add(path)

        return record

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._refresh()

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.steps += 1
        if not any(o is optimizer for o in self._seen):
            self._seen.append(optimizer)
        if self.check_mode != "step":
            return
        if self.full_every and self.steps % self.full_every == 0:
            self.check(optimizer)
        else:
            self._check(self._could_move(optimizer), [optimizer])

    # ------------------------------------------------------------------ what to watch

    def _watch(self, path: str, tensor: torch.Tensor, **meta: Any) -> None:
        self._snapshot.watch(path, tensor, **meta)
        self._checked.setdefault(path, 0)
        self._last_ok[path] = self.steps

    def _refresh(self) -> None:
        """Follow the freeze: newly frozen parameters and BatchNorms, replaced parameters."""
        entries = self._snapshot.entries
        replaced: list[TensorCheck] = []
        for path, p in self.model.named_parameters():
            if path in entries and self._snapshot.tensor(path) is not p:
                if local(self._snapshot.tensor(path)).shape != local(p).shape:
                    # A wrapper's other view of the same tensor (FSDP2 registers the unsharded
                    # parameter between forward and reshard): follow it from its value now.
                    self._snapshot.rebind(path, p)
                    self._snapshot.rebase([path])
                    continue
                row = self._snapshot.rebind(path, p)
                if row.moved and not p.requires_grad:
                    replaced.append(row)
            elif path not in entries and not p.requires_grad:
                self._watch(path, p)
        for path, bn in iter_batchnorms(self.model):
            if bn_is_frozen(bn):
                self._hook_bn(path, bn)
                self._watch_bn(path, bn)
        if replaced:
            self._record(replaced, [], cause="replaced")

    def _watch_bn(self, path: str, bn: nn.Module) -> None:
        policy = bn_state(bn)
        if self.allow_bn_stats and policy == "train":
            return
        self._bn_watched.add(path)
        for name, buf in bn.named_buffers(prefix=path, recurse=False):
            if buf is not None and name not in self._snapshot.entries:
                self._watch(name, buf, kind="buffer", module=path, bn_policy=policy)

    def _could_move(self, optimizer: torch.optim.Optimizer) -> list[str]:
        """Watched tensors this step could have moved (everything else needs an outside write)."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        paths = []
        for path, entry in self._snapshot.entries.items():
            t = entry.tensor
            if entry.kind == "param":
                if id(t) in held or t.grad is not None:
                    paths.append(path)
            elif entry.module in self._bn_ran_training or self._bn_training(entry.module):
                paths.append(path)
        return paths

    def _bn_training(self, module_path: str) -> bool:
        bn = self._bns.get(module_path)
        return bn is None or bn.training

    # ------------------------------------------------------------------ checking

    def check(self, optimizer: torch.optim.Optimizer | None = None) -> list[Violation]:
        """Compare every watched tensor with its last reference; return the new violations.

        Args:
            optimizer: The optimizer that just stepped (causes are sought in it); by default
                the guard's optimizers, or every optimizer seen stepping.

        Raises:
            FrozenWeightMoved: something moved and ``raise_on_violation`` is set.
        """
        self.full_checks += 1
        optimizers = [optimizer] if optimizer is not None else self.optimizers or self._seen
        new = self._check(None, optimizers)
        if group_active():  # every rank runs the same full checks: the gather lines up
            self.ranks = gather(self.model, self.violations)
            if self.raise_on_violation and not self.ranks.ok:
                raise RanksDisagree(self.ranks)  # on every rank, so none waits for the others
        return new

    def _check(
        self, paths: list[str] | None, optimizers: list[torch.optim.Optimizer]
    ) -> list[Violation]:
        self.checks += 1
        entries = self._snapshot.entries
        for path in list(entries) if paths is None else paths:
            if self._unfrozen(path):
                self._snapshot.drop(path)  # unfrozen since the snapshot: said in the report
                self.unfrozen.append(path)
        rows = self._snapshot.compare(paths)
        for row in rows:
            self._checked[row.path] += 1
        new = self._record([r for r in rows if r.moved], optimizers)
        for row in rows:
            self._last_ok[row.path] = self.steps
        self._bn_ran_training.clear()
        return new

    def _unfrozen(self, path: str) -> bool:
        entry = self._snapshot.entries[path]
        if entry.kind == "param":
            return entry.tensor.requires_grad
        bn = self._bns.get(entry.module)
        if bn is None or bn_is_frozen(bn):
            return False
        self._bn_watched.discard(entry.module)
        return True

    def _record(
        self,
        moved: list[TensorCheck],
        optimizers: list[torch.optim.Optimizer],
        cause: Cause | None = None,
    ) -> list[Violation]:
        new = [self._violation(row, optimizers, cause) for row in moved]
        self._snapshot.rebase([row.path for row in moved])
        for row in moved:
            self._last_ok[row.path] = self.steps
        self.violations.extend(new)
        for v in new:
            log.warning("%s", v)
        # Under a process group a rank raising alone would leave the others waiting in the
        # next gather: the gathered full check raises, on every rank.
        if new and self.raise_on_violation and not group_active():
            raise FrozenWeightMoved(new)
        return new

    def _violation(
        self, row: TensorCheck, optimizers: list[torch.optim.Optimizer], cause: Cause | None
    ) -> Violation:
        causes: list[Cause]
        if cause is not None:
            causes = [cause]
        elif row.kind == "param":
            causes = param_causes(self._snapshot.tensor(row.path), optimizers)
        else:
            causes = ["bn_train_mode"] if row.module in self._bn_ran_training else []
        causes = causes or ["external_write"]
        step = self.steps if self.steps else None
        since = self._last_ok.get(row.path, 0) or None
        return Violation(
            row.path, row.kind, step, row.max_abs_diff, causes[0], tuple(causes), since
        )

    @property
    def watched(self) -> int:
        """How many tensors are being watched now."""
        return len(self._snapshot)

    @property
    def report(self) -> GuardReport:
        return GuardReport(
            watched=len(self._checked),
            steps=self.steps,
            checks=self.checks,
            violations=tuple(self.violations),
            full_every=self.full_every if self.check_mode == "step" else 0,
            full_checks=self.full_checks,
            checked=tuple(self._checked.items()),
            unfrozen=tuple(self.unfrozen),
            ranks=self.ranks,
        )

    def rows(self) -> list[TensorCheck]:
        """Per-tensor rows (path, kind, moved, max diff) against the current reference."""
        return self._snapshot.compare()
