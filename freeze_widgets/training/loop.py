"""The fine-tune loop: :func:`finetune` prepares, trains epoch by epoch, and verifies.

What it gets right (docs/design.md, traps 1-3):

* the optimizer only sees trainable parameters, and frozen parameters lose any stale ``.grad``
  first (a stale gradient with momentum or weight decay still moves a "frozen" weight);
* frozen BatchNorm layers keep the policy set by :mod:`freeze_widgets.freezing.targets` across
  ``model.train()``; with ``bn=...`` the policy is re-applied first;
* gradually unfrozen groups join the running optimizer through ``add_param_group``;
* the frozen prefix of a chain-like model runs under ``torch.no_grad()`` and its output may be
  cached (:class:`~freeze_widgets.training.prefix.FrozenPrefix`).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from freeze_widgets.base.checks import require_materialized, require_module
from freeze_widgets.base.modules import module_modes
from freeze_widgets.checks.audit import audit_optimizer
from freeze_widgets.checks.batch import check_one_batch, require_finite_inputs
from freeze_widgets.data.loaders import (
    augment_batch,
    class_labels,
    infer_num_classes,
    make_loader,
    split_batch,
)
from freeze_widgets.data.synthetic import DEFAULT_IMAGE_SIZE
from freeze_widgets.freezing.bn import bn_is_frozen, bn_state, iter_batchnorms, set_bn_policy
from freeze_widgets.freezing.modes import restore_modes_by_policy
from freeze_widgets.freezing.rollback import all_or_nothing
from freeze_widgets.training.head import (
    find_head,
    replace_head,
    trainable_parameters,
)
from freeze_widgets.training.options import (
    FineTuneOptions,
    StepPlan,
    batches_in,
    make_optimizer,
    plan_steps,
)
from freeze_widgets.training.param_groups import (
    check_param_groups_args,
    param_groups,
    resolve_lr_groups,
)
from freeze_widgets.training.prefix import FrozenPrefix
from freeze_widgets.training.report import (
    FineTuneReport,
    NonFiniteLossError,
    StepEvent,
    UnfreezeEvent,
)
from freeze_widgets.training.schedule import (
    HEAD_THEN_ALL,
    resolve_schedule,
    schedule_rates,
    unfreeze_group,
)
from freeze_widgets.verify.rows import snapshot, verify

__all__ = ["finetune_one_process"]


# Over 60 lines on purpose: validate, prepare and train inside one all_or_nothing block,
# read whole (splitting it would hide which steps the rollback covers).
def finetune_one_process(
    model: nn.Module,
    data: Any,
    options: FineTuneOptions,
    *,
    num_classes: int | None = None,
    callback: Callable[[StepEvent], Any] | None = None,
    unfreeze_schedule: str | Sequence[Any] | dict[int, Any] | None = None,
    augment: bool = False,
    cache_features: bool | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    stop: threading.Event | None = None,
    lr_groups: dict[str, Any] | None = None,
) -> FineTuneReport:
    """The verified fine-tune in this process; see :func:`freeze_widgets.finetune` for the options.

    ``options`` come validated (:meth:`FineTuneOptions.checked`); everything else is checked
    here, before the model is touched.
    """
    require_module(model)
    if cache_features and augment:
        raise ValueError(
            "cache_features=True cannot be combined with augment=True: augmented inputs "
            "change the frozen features every epoch"
        )
    require_materialized(model, "fine-tune")
    loader, dataset = make_loader(
        data, batch_size=options.batch_size, image_size=image_size, seed=options.seed
    )
    if num_classes is None:
        num_classes = infer_num_classes(dataset)
    _check_something_to_train(model, num_classes)
    plan = plan_steps(options.epochs, options.steps, batches_in(loader))
    resolve_schedule(model, unfreeze_schedule, plan.epochs)  # validate before touching the model
    groups_args = resolve_lr_groups(options.lr, lr_groups)
    if groups_args is not None:
        check_param_groups_args(model, groups_args[0], **groups_args[1])

    report = FineTuneReport(num_classes=num_classes, optimizer=options.optimizer, lr=options.lr)
    modes = module_modes(model)
    # All or nothing for the whole run, training included (trap 24): a failure at any step
    # (an exception, a bad batch, a NaN loss, KeyboardInterrupt) puts back every weight,
    # buffer, head, mode and requires_grad. A stop (callback False, ``stop`` set) is not one.
    try:
        with all_or_nothing(model, values=True):
            if num_classes is not None:
                report.head_replaced = replace_head(model, num_classes, options.seed)
            check_one_batch(model, loader, num_classes)
            # Resolved again now: a replaced head is trainable and must not count as frozen.
            schedule = resolve_schedule(model, unfreeze_schedule, plan.epochs)
            if options.bn is not None:
                set_bn_policy(model, options.bn)
            report.bn_policy = _report_bn_policy(model)
            run = _Run(
                model=model,
                loader=loader,
                optimizer=_optimizer_for(model, options.optimizer, options.lr, groups_args),
                report=report,
                schedule=schedule_rates(model, unfreeze_schedule, schedule, options.lr),
                options=_Options(
                    options, callback, stop, augment, cache_features, unfreeze_schedule
                ),
                plan=plan,
            )
            return _train_and_verify(run, modes)
    except BaseException as exc:
        if sys.version_info >= (3, 11):  # notes print under the message from 3.11 on
            exc.add_note(RESTORED_NOTE)
        raise


#: Added to every error out of a fine-tune: nothing the failed run did was kept.
RESTORED_NOTE = (
    "finetune: the model was restored exactly as it was before the call (weights, buffers, "
    "head, modes, requires_grad)"
)


@dataclass(frozen=True)
class _Options:
    """The arguments of the fine-tune the loop itself reads."""

    run: FineTuneOptions
    callback: Callable[[StepEvent], Any] | None
    stop: threading.Event | None
    augment: bool
    cache_features: bool | None
    unfreeze_schedule: Any = None

    @property
    def lr(self) -> float:
        return self.run.lr

    @property
    def seed(self) -> int:
        return self.run.seed


@dataclass
class _Run:
    """One training run: what it works on, and where it is (the loop's only state)."""

    model: nn.Module
    loader: DataLoader[Any]
    optimizer: torch.optim.Optimizer
    report: FineTuneReport
    schedule: dict[int, list[tuple[str, float]]]
    options: _Options
    plan: StepPlan
    total: int = 0
    n_epochs: int = 0
    step: int = 0
    start: float = 0.0
    device: torch.device = field(init=False)
    prefix: FrozenPrefix = field(init=False)
    augment_gen: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.device = next(iter(self.model.parameters())).device
        self.prefix = FrozenPrefix(seed=self.options.seed + 2)
        self.augment_gen = torch.Generator().manual_seed(self.options.seed + 1)


def _check_something_to_train(model: nn.Module, num_classes: int | None) -> None:
    """Nothing trainable is an error before any work, unless a new head will be trainable."""
    head = find_head(model)
    new_head = num_classes is not None and (head is None or head[1].out_features != num_classes)
    if not new_head and not trainable_parameters(model):
        n = sum(1 for _ in model.parameters())
        raise ValueError(
            f"nothing to train: all {n} parameters are frozen; untick a module or call "
            "unfreeze(model, 'fc')"
        )


def _report_bn_policy(model: nn.Module) -> str:
    states = {bn_state(m) for _, m in iter_batchnorms(model) if bn_is_frozen(m)}
    if not states:
        return "none"
    return states.pop() if len(states) == 1 else "mixed"


def _optimizer_for(
    model: nn.Module, name: str, lr: float, groups_args: tuple[Any, dict[str, Any]] | None
) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters, after clearing frozen ones' gradients.

    With ``lr_groups`` the trainable parameters come as :func:`param_groups` groups, each
    with its own rate.
    """
    # Stale gradients on frozen tensors would be applied by momentum / weight decay.
    for p in model.parameters():
        if not p.requires_grad:
            p.grad = None
    if groups_args is None:
        return make_optimizer(name, trainable_parameters(model), lr)
    groups = param_groups(model, groups_args[0], **groups_args[1])
    if "weight_decay" not in groups_args[1]:
        for group in groups:  # not asked for: the optimizer's own default (AdamW's 0.01)
            del group["weight_decay"]
    return make_optimizer(name, groups, lr)


def _train_and_verify(run: _Run, modes: dict[nn.Module, bool]) -> FineTuneReport:
    """Train, put the modes back, and compare every tensor with its pre-training snapshot."""
    model, report = run.model, run.report
    snap = snapshot(model)
    try:
        _train(run)
    except NonFiniteLossError as exc:
        report.verification = verify(snap, _unfrozen_at(report), report.steps)
        exc.report = report
        raise
    finally:
        restore_modes_by_policy(modes, model)
    report.verification = verify(snap, _unfrozen_at(report), report.steps)
    report.optimizer_findings = audit_optimizer(model, run.optimizer)
    return report


def _unfrozen_at(report: FineTuneReport) -> dict[str, int]:
    """Group -> the first epoch the schedule unfroze it at."""
    first: dict[str, int] = {}
    for event in report.unfreeze_events:
        first.setdefault(event.group, event.epoch)
    return first


def _train(run: _Run) -> None:
    run.total, run.n_epochs = run.plan.total_steps, run.plan.epochs
    run.report.total_steps = run.total
    run.model.train()
    run.start = time.perf_counter()
    for epoch in range(1, run.n_epochs + 1):
        _unfreeze_scheduled(run, epoch)
        _run_epoch(run, epoch)
        if run.report.stopped_early or run.step >= run.total:
            break
    _finish(run, stopped=run.report.stopped_early, reason=run.report.stop_reason)


def _unfreeze_scheduled(run: _Run, epoch: int) -> None:
    """Release this epoch's groups at the rates :func:`schedule_rates` planned."""
    released = run.schedule.get(epoch, [])
    if released and run.options.unfreeze_schedule == HEAD_THEN_ALL:
        for g in run.optimizer.param_groups:  # fastai's fine_tune halves the rate here
            g["lr"] = g["lr"] / 2
    for group, group_lr in released:
        added = unfreeze_group(run.model, run.optimizer, group, group_lr)
        run.report.unfreeze_events.append(UnfreezeEvent(epoch, group, group_lr, added))


def _run_epoch(run: _Run, epoch: int) -> None:
    report, prefix, options = run.report, run.prefix, run.options
    epoch_start = time.perf_counter()
    may_cache = (
        not options.augment
        and (options.cache_features if options.cache_features is not None else run.n_epochs > 1)
        and epoch < run.n_epochs
    )
    if prefix.start_epoch(run.model, may_cache=bool(may_cache)):
        report.cached_epochs.append(epoch)
    if prefix.checked:
        report.frozen_prefix = prefix.frozen_names
    loss_sum = correct = seen = 0.0
    for batch in prefix.batches(run.loader):
        if run.step >= run.total:
            break
        loss, acc, n = _step(run, batch, epoch)
        loss_sum += loss * n
        correct += acc * n
        seen += n
        if report.stopped_early:
            break
    report.epochs = epoch
    report.epoch_seconds.append(time.perf_counter() - epoch_start)
    if seen:
        report.epoch_loss.append(loss_sum / seen)
        report.epoch_acc.append(correct / seen)
    prefix.end_epoch(keep=not report.stopped_early and run.step < run.total)


def _step(run: _Run, batch: Any, epoch: int) -> tuple[float, float, int]:
    """One optimizer step on ``batch``; returns its loss, accuracy and size."""
    x, y = split_batch(batch)
    where = f"batch {run.step + 1} (epoch {epoch})"
    y = class_labels(y, run.report.num_classes, where)
    require_finite_inputs(x, where)  # before the train-mode forward writes BatchNorm statistics
    x, y = x.to(run.device, non_blocking=True), y.to(run.device)
    if not run.prefix.checked:
        run.prefix.check(run.model, x)
        run.report.frozen_prefix = run.prefix.frozen_names
    if run.options.augment:
        x = augment_batch(x, run.augment_gen)
    t0 = time.perf_counter()
    out = run.prefix.forward(run.model, x, y)
    if run.report.num_classes is None and out.dim() == 2:  # the head's size is the only bound
        class_labels(y, int(out.shape[1]), where)
    loss = F.cross_entropy(out, y)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        run.report.step_seconds.append(time.perf_counter() - t0)
        raise _non_finite(run, loss_value, epoch)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    dt = time.perf_counter() - t0

    run.step += 1
    acc = float((out.detach().argmax(1) == y).float().mean()) if out.dim() == 2 else 0.0
    n = int(y.shape[0])
    report = run.report
    report.step_loss.append(loss_value)
    report.step_acc.append(acc)
    report.step_seconds.append(dt)
    report.steps = run.step
    report.samples += n
    _notify(run, epoch, loss_value, acc)
    return loss_value, acc, n


def _notify(run: _Run, epoch: int, loss: float, acc: float) -> None:
    """Tell the callback about the step, and note a stop it or the stop event asked for."""
    elapsed = time.perf_counter() - run.start
    eta = elapsed / run.step * (run.total - run.step)
    keep_going = True
    callback, stop = run.options.callback, run.options.stop
    if callback is not None:
        groups = len(run.optimizer.param_groups)
        keep_going = callback(
            StepEvent(run.step, run.total, epoch, loss, acc, elapsed, eta, groups, _lrs(run))
        )
    if keep_going is False:
        run.report.stopped_early, run.report.stop_reason = True, "callback returned False"
    elif stop is not None and stop.is_set():
        run.report.stopped_early, run.report.stop_reason = True, "stop requested"


def _lrs(run: _Run) -> tuple[float, ...]:
    return tuple(float(g["lr"]) for g in run.optimizer.param_groups)


def _non_finite(run: _Run, loss_value: float, epoch: int) -> NonFiniteLossError:
    """Close the report at a NaN/inf loss and build the error that carries it."""
    _finish(run, stopped=True, reason=f"loss became {loss_value}")
    kind = "nan" if math.isnan(loss_value) else "infinite"
    run.report.error = (
        f"loss became {kind} at step {run.step + 1} (epoch {epoch}); try a lower lr "
        f"(lr={run.options.lr:g}); the model was restored as it was before finetune"
    )
    return NonFiniteLossError(run.report.error, run.report)


def _finish(run: _Run, *, stopped: bool, reason: str | None) -> None:
    report = run.report
    report.total_seconds = time.perf_counter() - run.start
    secs = report.total_seconds
    report.samples_per_second = report.samples / secs if secs > 0 else 0.0
    report.stopped_early = stopped
    report.stop_reason = reason
