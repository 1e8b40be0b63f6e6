"""``finetune_distributed``: the verified demo fine-tune in several local worker processes."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from freeze_widgets.base.checks import BnPolicy, require_module
from freeze_widgets.checks.batch import check_one_batch
from freeze_widgets.checks.preflight import STRATEGIES, RunStrategy, check_distributed
from freeze_widgets.data.loaders import make_loader
from freeze_widgets.data.synthetic import DEFAULT_SYNTHETIC_CLASSES
from freeze_widgets.distributed.job import JobConfig
from freeze_widgets.distributed.launcher import launch
from freeze_widgets.distributed.report import DistributedFineTuneReport
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.freezing.targets import set_bn_policy, unfreeze
from freeze_widgets.training import StepEvent, find_head
from freeze_widgets.training.head import replace_head
from freeze_widgets.training.options import (
    FineTuneOptions,
    plan_steps,
    require_count,
    require_positive_number,
)
from freeze_widgets.training.schedule import resolve_schedule

__all__ = ["check_nproc", "finetune_distributed", "max_processes"]


def max_processes() -> int:
    """Worker processes this machine can run at once: one per GPU with CUDA, else per core."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return os.cpu_count() or 1


def check_nproc(nproc: object) -> int:
    """``nproc`` as an int from 1 to :func:`max_processes`, or an error naming the limit."""
    nproc = require_count(nproc, "nproc")
    limit = max_processes()
    if nproc > limit:
        raise ValueError(
            f"nproc={nproc} is more processes than this machine runs at once ({limit}: one per "
            "CPU core, or per GPU with CUDA); use nproc<=" + str(limit)
        )
    return nproc


def _check_strategy(strategy: object) -> None:
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be 'ddp' or 'fsdp'; got {type(strategy).__name__}")
    if strategy not in STRATEGIES[:2]:
        raise ValueError(f"strategy must be 'ddp' or 'fsdp' (FSDP2 fully_shard); got {strategy!r}")


def _classes_and_size(data: Any, image_size: int, synthetic_n: int) -> tuple[int | None, int]:
    """(number of classes if known, number of items) of the data without loading it all."""
    if data is None:
        return DEFAULT_SYNTHETIC_CLASSES, synthetic_n
    if isinstance(data, (str, Path)):
        from freeze_widgets.data.loaders import image_folder

        folder: Any = image_folder(Path(data), image_size)
        return len(folder.classes), len(folder)
    classes = getattr(data, "classes", None)
    num = len(classes) if classes is not None else getattr(data, "num_classes", None)
    if num is None and getattr(data, "targets", None) is not None:
        num = int(torch.as_tensor(data.targets).max()) + 1
    return (num if isinstance(num, int) else None), len(data)


def _data_ref(data: Any, out: Path) -> str | None:
    if data is None:
        return None
    if isinstance(data, (str, Path)):
        path = Path(data).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"data={str(data)!r} is not a directory (expected ImageFolder layout)")
        return f"dir:{path}"
    if isinstance(data, Dataset):
        torch.save(data, out / "dataset.pt")
        return f"file:{out / 'dataset.pt'}"
    raise TypeError(
        "data must be None (synthetic images), a torch Dataset, a DataLoader or an ImageFolder "
        f"directory path; got {type(data).__name__}"
    )


def _refuse_unused_trainable(model: nn.Module, data: Any, image_size: int) -> None:
    """DDP without find_unused_parameters fails mid-run on these: say so before starting."""
    sample = data[0][0] if isinstance(data, Dataset) else torch.zeros(3, image_size, image_size)
    inputs = torch.stack([torch.as_tensor(sample)] * 2)
    unused = [f for f in check_distributed(model, "ddp", inputs) if f.kind == "unused_trainable"]
    if unused:
        lines = "\n".join(f"- {f}" for f in unused)
        raise ValueError(
            "trainable parameters get no gradient, which DDP cannot synchronise (docs/design.md, "
            f"trap 11):\n{lines}\nFreeze them, or use strategy='fsdp'."
        )


def _require_importable(model: nn.Module, data: Any) -> None:
    """Worker processes unpickle by import: a class from a notebook cell or a function body
    would fail there after the workers started (``Can't get attribute 'Local'``); say so now."""
    classes: set[type] = {type(m) for m in model.modules()}
    if isinstance(data, Dataset):
        classes.add(type(data))
    for cls in sorted(classes, key=lambda c: c.__qualname__):
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            where = (
                "a notebook cell or the main script"
                if cls.__module__ == "__main__"
                else ("a function body")
            )
            raise TypeError(
                f"{cls.__qualname__} is defined in {where}, so the worker processes cannot "
                "import it to unpickle the model or data: move the class into a .py module "
                "next to the notebook and import it from there, or use nproc=1"
            )


def _save_model(model: nn.Module, path: Path) -> None:
    try:
        torch.save(model, path)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(
            f"the model cannot be sent to worker processes ({exc}); its class must be "
            "importable (defined in a module, not a notebook cell) and hold no lambdas"
        ) from None


def _load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy the trained tensors into the caller's model, by name (same tensors, in place)."""
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name in state and state[name].shape == t.shape:
                t.copy_(state[name].to(t.device))


def finetune_distributed(
    model: nn.Module,
    data: Any = None,
    *,
    nproc: int = 2,
    strategy: RunStrategy = "ddp",
    epochs: int = 1,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    num_classes: int | None = None,
    unfreeze_schedule: Any = None,
    bn: BnPolicy | None = None,
    image_size: int = 32,
    seed: int = 0,
    synthetic_n: int = 512,
    timeout_s: float = 600.0,
    workdir: str | Path | None = None,
    keep_rank_states: bool = False,
    callback: Callable[[StepEvent], Any] | None = None,
    stop: threading.Event | None = None,
) -> DistributedFineTuneReport:
    """Fine-tune ``model`` in ``nproc`` local processes (DDP or FSDP2) and verify every rank.

    The model and its freeze (``FreezeSpec.from_model``, BatchNorm policy included) go to the
    workers through a private temporary directory; each worker applies the freeze before
    wrapping, trains, and checks bitwise that its frozen tensors did not move; trainable ones
    must end identical on every rank. On success the trained weights are copied into
    ``model`` (a replaced head and unfrozen groups as :func:`~freeze_widgets.finetune` leaves
    them); on failure ``model`` is untouched and no worker process is left.

    Args:
        model: A classifier whose class is importable (it is pickled for the workers).
        data: None (synthetic shapes), a Dataset, a DataLoader or an ImageFolder directory.
        nproc: Worker processes on this machine.
        strategy: ``"ddp"`` or ``"fsdp"`` (FSDP2 ``fully_shard`` of every child and the root).
        epochs: Passes over the data, which the ranks split between them.
        steps: Optimizer steps per rank; overrides ``epochs``.
        batch_size: Per process (the global batch is ``nproc * batch_size``).
        lr: Learning rate; gradually unfrozen groups get ``lr / 2.6**k``.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (momentum 0.9).
        num_classes: Replace the head when its output size differs (seeded, same on all ranks).
        unfreeze_schedule: As in ``finetune``: ``"gradual"``, a list, or ``{epoch: groups}``.
        bn: BatchNorm policy of frozen layers; None keeps the model's.
        image_size: Side of synthetic / ImageFolder images.
        seed: Seeds data order, synthetic data and a new head.
        synthetic_n: Number of synthetic images.
        timeout_s: Kill every worker and raise if the run takes longer.
        workdir: Keep the job's files (logs, ``state.pt``, ``result.json``) here.
        keep_rank_states: Each rank also saves its final full state as ``rank{r}.pt``.
        callback: Called with a :class:`StepEvent` for each of rank 0's steps, while it runs.
        stop: Set it to stop every rank at the same step (a step or two later); the report
            says ``stopped_early`` and the steps trained, which are verified and applied.

    Raises:
        DistributedRunError: a worker failed (its rank and exception are named), timed out,
            or ``stop`` was set.
        ValueError, TypeError: bad arguments, or (DDP) trainable parameters that get no
            gradient, before anything starts.
    """
    require_module(model)
    options = FineTuneOptions.checked(
        epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, bn=bn,
        seed=seed,
    )  # fmt: skip
    check_nproc(nproc)
    _check_strategy(strategy)
    timeout_s = require_positive_number(timeout_s, "timeout_s")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError(f"stop must be a threading.Event or None; got {type(stop).__name__}")
    if isinstance(data, DataLoader):
        options = replace(options, batch_size=data.batch_size or options.batch_size)
        data = data.dataset
    plan = _plan_run(model, data, options, nproc, num_classes, unfreeze_schedule, image_size,
                     synthetic_n)  # fmt: skip
    if strategy == "ddp" and not isinstance(data, (str, Path)):
        _refuse_unused_trainable(model, data, image_size)

    out = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fw-dist-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        job = JobConfig(
            out_dir=str(out),
            spec_json=FreezeSpec.from_model(model, bn=options.bn).to_json(),
            strategy=strategy,
            epochs=options.epochs,
            steps=options.steps,
            batch_size=options.batch_size,
            lr=options.lr,
            optimizer=options.optimizer,
            image_size=image_size,
            num_classes=plan.num_classes if plan.new_head else None,
            synthetic_n=synthetic_n,
            seed=options.seed,
            data=_data_ref(data, out),
            model_file=str(out / "model.pt"),
            schedule=plan.schedule,
            save_rank_states=keep_rank_states,
            private_dir=workdir is None,
            timeout_s=timeout_s,
        )
        report, state = _launch(model, job, nproc, callback, stop)
    finally:
        if workdir is None:
            shutil.rmtree(out, ignore_errors=True)
    # Success: now (and only now) the caller's model changes, as finetune would change it.
    if plan.new_head and plan.num_classes is not None:
        report.head_replaced = replace_head(model, plan.num_classes, options.seed)
    report.num_classes = plan.num_classes
    _apply_to_caller(model, report, state, options.bn)
    return report


@dataclass(frozen=True)
class _RunPlan:
    """What the caller's process settles before any worker starts."""

    num_classes: int | None
    new_head: bool
    schedule: dict[int, list[str]]


def _plan_run(
    model: nn.Module,
    data: Any,
    options: FineTuneOptions,
    nproc: int,
    num_classes: int | None,
    unfreeze_schedule: Any,
    image_size: int,
    synthetic_n: int,
) -> _RunPlan:
    """Classes, head and schedule, and the checks one process makes first (seconds, not a
    worker's minute): something to train, an importable model and data, one batch that fits."""
    known_classes, n_items = _classes_and_size(data, image_size, synthetic_n)
    num_classes = num_classes if num_classes is not None else known_classes
    head = find_head(model)
    new_head = num_classes is not None and (head is None or head[1].out_features != num_classes)
    if not new_head and not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            "nothing to train: every parameter is frozen; untick a module or call "
            "unfreeze(model, 'fc')"
        )
    per_rank_batches = math.ceil(math.ceil(n_items / nproc) / options.batch_size)
    planned = plan_steps(options.epochs, options.steps, per_rank_batches).epochs
    head_path = head[0] if new_head and head is not None else None
    schedule = resolve_schedule(model, unfreeze_schedule, planned, new_head=head_path)
    _require_importable(model, data)
    if data is not None:
        loader, _ = make_loader(
            data, batch_size=options.batch_size, image_size=image_size, seed=options.seed
        )
        check_one_batch(model, loader, num_classes, new_head=new_head)
    return _RunPlan(num_classes, new_head, schedule)


def _launch(
    model: nn.Module,
    job: JobConfig,
    nproc: int,
    callback: Callable[[StepEvent], Any] | None,
    stop: threading.Event | None,
) -> tuple[DistributedFineTuneReport, dict[str, torch.Tensor]]:
    """Save the model for the workers, run them, and read back the report and the state."""
    out = Path(job.out_dir)
    _save_model(model, out / "model.pt")
    t0 = time.perf_counter()
    on_progress = None if callback is None else _step_events(callback)
    result = launch(job, nproc, job.timeout_s, on_progress=on_progress, stop=stop)
    report = DistributedFineTuneReport.from_dict(result)
    report.launch_seconds = time.perf_counter() - t0
    return report, torch.load(out / "state.pt", weights_only=True)


def _step_events(callback: Callable[[StepEvent], Any]) -> Callable[[dict[str, Any]], None]:
    """Rank 0's progress lines as the StepEvents a single-process run gives its callback."""

    def on_line(line: dict[str, Any]) -> None:
        step, total, elapsed = int(line["step"]), int(line["total"]), float(line["elapsed"])
        eta = elapsed / step * (total - step) if step else 0.0
        event = StepEvent(
            step, total, int(line["epoch"]), float(line["loss"]), float(line["acc"]), elapsed, eta
        )
        callback(event)

    return on_line


def _apply_to_caller(
    model: nn.Module, report: DistributedFineTuneReport, state: dict[str, torch.Tensor], bn: Any
) -> None:
    """The BatchNorm policy, the unfrozen groups and the trained weights, in place."""
    if bn is not None:
        set_bn_policy(model, bn)
    for event in report.unfreeze_events:
        unfreeze(model, event.group)
    _load_into(model, state)
