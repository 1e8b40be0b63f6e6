"""The fine-tune loop: :func:`finetune` prepares, trains epoch by epoch, and verifies.

What it gets right (docs/design.md, traps 1-3):

* the optimizer only sees trainable parameters, and frozen parameters lose any stale ``.grad``
  first (a stale gradient with momentum or weight decay still moves a "frozen" weight);
* frozen BatchNorm layers keep the policy set by :mod:`freeze_widgets.freezing` across
  ``model.train()``; with ``bn=...`` the policy is re-applied first;
* gradually unfrozen groups join the running optimizer through ``add_param_group``;
* the frozen prefix of a chain-like model runs under ``torch.no_grad()`` and its output may be
  cached (:class:`~freeze_widgets.training.prefix.FrozenPrefix`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from .._helpers import check_bn_policy, module_modes, require_module
from .._rollback import all_or_nothing
from ..audit import audit_optimizer
from ..bn import bn_is_frozen, bn_state, iter_batchnorms, set_bn_policy
from .data import DEFAULT_IMAGE_SIZE, augment_batch, infer_num_classes, make_loader, split_batch
from .head import OPTIMIZERS, find_head, make_optimizer, replace_head, trainable_parameters
from .modes import restore_modes_by_policy
from .prefix import FrozenPrefix
from .report import FineTuneReport, NonFiniteLossError, StepEvent, UnfreezeEvent
from .schedule import ULMFIT_LR_FACTOR, resolve_schedule, unfreeze_group
from .validate import check_materialized, check_one_batch
from .verify import snapshot, verify

__all__ = ["finetune"]


def finetune(
    model: nn.Module,
    data: Any = None,
    *,
    epochs: int = 1,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    num_classes: int | None = None,
    callback: Callable[[StepEvent], Any] | None = None,
    unfreeze_schedule: str | Sequence[Any] | dict[int, Any] | None = None,
    bn: str | None = None,
    augment: bool = False,
    cache_features: bool | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    stop: threading.Event | None = None,
    nproc: int = 1,
    strategy: str = "ddp",
) -> FineTuneReport:
    """Fine-tune the trainable part of ``model`` in place and verify the frozen part.

    Args:
        model: A classifier taking image batches; trained in place. Its train/eval mode is
            restored afterwards.
        data: None for :func:`synthetic_dataset` images; a dataset name, ``"digits"``
            (scikit-learn's offline 8x8 handwritten digits, training split, 3 channels at
            ``image_size``: :func:`freeze_widgets.datasets.finetune_dataset`) or
            ``"synthetic"``; a Dataset or DataLoader yielding ``(inputs, labels)``; or an
            ImageFolder directory (resized to ``image_size``).
        epochs: Passes over the data.
        steps: Total optimizer steps; when given it overrides ``epochs`` (the data repeats
            as needed).
        batch_size: Used unless ``data`` is a DataLoader.
        lr: Learning rate of the parameters trainable at the start.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (momentum 0.9).
        num_classes: Classes of the task; if None, inferred from the dataset's ``classes``,
            ``num_classes`` or ``targets``, or by reading the labels of up to 10,000 items. A
            head with a different output size is replaced by a fresh, trainable ``nn.Linear``.
        callback: Called with a :class:`StepEvent` after every step; returning False stops.
        unfreeze_schedule: ``"gradual"`` unfreezes one more frozen top-level group per epoch,
            from the end of the model backwards, at ``lr / 2.6**k``; a list gives the group(s)
            for epochs 2, 3, ...; a dict maps 1-based epochs to group(s).
        bn: Re-apply this BatchNorm policy ("eval", "frozen", "train") to every fully frozen
            BatchNorm before training; None keeps the policies already set.
        augment: Random shifts and brightness jitter on the inputs.
        cache_features: Keep the frozen prefix's output after the first epoch and train later
            epochs on it. None means: when augment is off, a frozen prefix exists and
            ``epochs > 1``. Only used when the prefix is deterministic (no BatchNorm or
            dropout in train mode).
        image_size: Side of synthetic / ImageFolder images.
        seed: Seeds shuffling, augmentation and the new head.
        stop: A ``threading.Event``; when set, training stops after the current step.
        nproc: With more than 1, the same verified run happens in ``nproc`` local worker
            processes launched by PyTorch's elastic launcher (torchrun), and the report merges
            the ranks (:func:`freeze_widgets.distributed.finetune_distributed`); ``callback``,
            ``stop``, ``augment`` and ``cache_features`` are single-process only.
        strategy: With ``nproc > 1``: ``"ddp"`` (DistributedDataParallel) or ``"fsdp"``
            (FSDP2 ``fully_shard``).

    Returns:
        A :class:`FineTuneReport`; ``report.ok`` is True iff frozen weights and frozen
        "eval"/"frozen" BatchNorm statistics are bitwise unchanged.

    Raises:
        ValueError: nothing to train, bad arguments or data (labels outside ``num_classes``,
            inputs the model cannot take: one forward on one batch is tried first, and the
            model is left exactly as it was).
        TypeError: ``model`` is not an ``nn.Module``, or unsupported ``data``.
        NonFiniteLossError: the loss became NaN/inf (``exc.report`` holds the run so far).

    Example:
        >>> from torchvision.models import resnet18
        >>> from freeze_widgets import freeze
        >>> m = resnet18()
        >>> _ = freeze(m)
        >>> report = finetune(m, steps=2, num_classes=4)  # doctest: +SKIP
        >>> report.ok  # doctest: +SKIP
        True
    """
    require_module(model)
    _check_arguments(epochs, steps, batch_size, lr, bn, augment, cache_features, optimizer)
    check_materialized(model, "fine-tune")
    if nproc != 1:
        return _finetune_in_processes(model, data, locals())
    loader, dataset = make_loader(data, batch_size=batch_size, image_size=image_size, seed=seed)
    if num_classes is None:
        num_classes = infer_num_classes(dataset)
    _check_something_to_train(model, num_classes)
    planned = _planned_epochs(loader, epochs, steps)
    resolve_schedule(model, unfreeze_schedule, planned)  # validate before touching the model

    report = FineTuneReport(num_classes=num_classes, optimizer=optimizer.lower(), lr=lr)
    modes = module_modes(model)
    with all_or_nothing(model):
        if num_classes is not None:
            report.head_replaced = replace_head(model, num_classes, seed)
        check_one_batch(model, loader, num_classes)
        # Resolved again now: a replaced head is trainable and must not count as a frozen group.
        schedule = resolve_schedule(model, unfreeze_schedule, planned)
        if bn is not None:
            set_bn_policy(model, bn)
    report.bn_policy = _report_bn_policy(model)
    run = _Run(
        model=model,
        loader=loader,
        optimizer=_optimizer_for(model, optimizer, lr),
        report=report,
        schedule=schedule,
        options=_Options(epochs, steps, lr, callback, stop, augment, cache_features, seed),
    )
    return _train_and_verify(run, modes)


@dataclass(frozen=True)
class _Options:
    """The arguments of :func:`finetune` the loop itself reads."""

    epochs: int
    steps: int | None
    lr: float
    callback: Callable[[StepEvent], Any] | None
    stop: threading.Event | None
    augment: bool
    cache_features: bool | None
    seed: int


@dataclass
class _Run:
    """One training run: what it works on, and where it is (the loop's only state)."""

    model: nn.Module
    loader: DataLoader[Any]
    optimizer: torch.optim.Optimizer
    report: FineTuneReport
    schedule: dict[int, list[str]]
    options: _Options
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


def _check_arguments(
    epochs: int,
    steps: int | None,
    batch_size: int,
    lr: float,
    bn: str | None,
    augment: bool,
    cache_features: bool | None,
    optimizer: str,
) -> None:
    """Raise on a bad argument before anything is touched."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1 (or None), got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    check_bn_policy(bn, allow_none=True)
    if cache_features and augment:
        raise ValueError(
            "cache_features=True cannot be combined with augment=True: augmented inputs "
            "change the frozen features every epoch"
        )
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer must be 'adamw', 'adam' or 'sgd'; got {optimizer!r}")


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


_SINGLE_PROCESS_ONLY = ("callback", "stop", "augment", "cache_features")


def _finetune_in_processes(model: nn.Module, data: Any, args: dict[str, Any]) -> FineTuneReport:
    """``finetune(..., nproc>1)``: the distributed runner, with the same arguments."""
    from ..distributed import finetune_distributed

    nproc = args["nproc"]
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer; got {nproc!r}")
    used = [name for name in _SINGLE_PROCESS_ONLY if args[name] not in (None, False)]
    if used:
        raise ValueError(
            f"{', '.join(used)} work in a single process only; drop them or use nproc=1"
        )
    keep = ("epochs", "steps", "batch_size", "lr", "optimizer", "num_classes")
    more = ("unfreeze_schedule", "bn", "image_size", "seed", "strategy", "nproc")
    return finetune_distributed(model, data, **{k: args[k] for k in keep + more})


def _planned_epochs(loader: DataLoader[Any], epochs: int, steps: int | None) -> int:
    if steps is None:
        return epochs
    try:
        per_epoch = len(loader)
    except TypeError:
        return epochs
    return max(1, math.ceil(steps / max(per_epoch, 1)))


def _report_bn_policy(model: nn.Module) -> str:
    states = {bn_state(m) for _, m in iter_batchnorms(model) if bn_is_frozen(m)}
    if not states:
        return "none"
    return states.pop() if len(states) == 1 else "mixed"


def _optimizer_for(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters, after clearing frozen ones' gradients."""
    # Stale gradients on frozen tensors would be applied by momentum / weight decay.
    for p in model.parameters():
        if not p.requires_grad:
            p.grad = None
    return make_optimizer(name, trainable_parameters(model), lr)


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
    run.total, run.n_epochs = _plan_steps(run.loader, run.options.epochs, run.options.steps)
    run.report.total_steps = run.total
    run.model.train()
    run.start = time.perf_counter()
    for epoch in range(1, run.n_epochs + 1):
        _unfreeze_scheduled(run, epoch)
        _run_epoch(run, epoch)
        if run.report.stopped_early or run.step >= run.total:
            break
    _finish(run, stopped=run.report.stopped_early, reason=run.report.stop_reason)


def _plan_steps(loader: DataLoader[Any], epochs: int, steps: int | None) -> tuple[int, int]:
    """Total optimizer steps and the epochs they span."""
    try:
        per_epoch = len(loader)
    except TypeError:
        if steps is None:
            raise ValueError("data without a length (an IterableDataset) needs steps=") from None
        per_epoch = steps
    if per_epoch == 0:
        raise ValueError("the data is empty: no batches to train on")
    total = steps if steps is not None else epochs * per_epoch
    return total, math.ceil(total / per_epoch)


def _unfreeze_scheduled(run: _Run, epoch: int) -> None:
    """Release this epoch's groups, each at a smaller learning rate than the one before."""
    for group in run.schedule.get(epoch, []):
        group_lr = run.options.lr / ULMFIT_LR_FACTOR ** (len(run.report.unfreeze_events) + 1)
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
    x, y = x.to(run.device, non_blocking=True), y.to(run.device).long()
    if not run.prefix.checked:
        run.prefix.check(run.model, x)
        run.report.frozen_prefix = run.prefix.frozen_names
    if run.options.augment:
        x = augment_batch(x, run.augment_gen)
    t0 = time.perf_counter()
    out = run.prefix.forward(run.model, x, y)
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
            StepEvent(run.step, run.total, epoch, loss, acc, elapsed, eta, groups)
        )
    if keep_going is False:
        run.report.stopped_early, run.report.stop_reason = True, "callback returned False"
    elif stop is not None and stop.is_set():
        run.report.stopped_early, run.report.stop_reason = True, "stop requested"


def _non_finite(run: _Run, loss_value: float, epoch: int) -> NonFiniteLossError:
    """Close the report at a NaN/inf loss and build the error that carries it."""
    _finish(run, stopped=True, reason=f"loss became {loss_value}")
    kind = "nan" if math.isnan(loss_value) else "infinite"
    run.report.error = (
        f"loss became {kind} at step {run.step + 1} (epoch {epoch}); try a lower lr "
        f"(lr={run.options.lr:g})"
    )
    return NonFiniteLossError(run.report.error, run.report)


def _finish(run: _Run, *, stopped: bool, reason: str | None) -> None:
    report = run.report
    report.total_seconds = time.perf_counter() - run.start
    secs = report.total_seconds
    report.samples_per_second = report.samples / secs if secs > 0 else 0.0
    report.stopped_early = stopped
    report.stop_reason = reason
