"""The per-rank training loop, with gradual unfreezing that DDP and FSDP2 both see.

Groups unfrozen later are trainable from the start (DDP registered them when it wrapped) but
stay out of the optimizer, and their gradients are dropped after every backward, until their
epoch: then they join through ``add_param_group``. So neither momentum nor weight decay touches
them before (no optimizer state exists for them), and every rank does the same.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from freeze_widgets.checks.batch import require_finite_inputs
from freeze_widgets.data.loaders import class_labels
from freeze_widgets.distributed.data import build_dataset
from freeze_widgets.distributed.job import JobConfig
from freeze_widgets.distributed.progress import ProgressWriter, stop_agreed
from freeze_widgets.distributed.rankcheck import RankCheck, Snapshot, full_tensors
from freeze_widgets.freezing.targets import unfreeze
from freeze_widgets.training import ULMFIT_LR_FACTOR
from freeze_widgets.training.options import make_optimizer, plan_steps

__all__ = ["Trainer"]


class Trainer:
    """Trains ``wrapped`` (DDP or FSDP2 around ``model``) and fills ``check`` with the curves."""

    def __init__(
        self,
        job: JobConfig,
        model: nn.Module,
        wrapped: nn.Module,
        pending: dict[str, int],
        snap: Snapshot,
        check: RankCheck,
        device: torch.device,
    ) -> None:
        self.job, self.model, self.wrapped = job, model, wrapped
        self.pending, self.snap, self.check, self.device = pending, snap, check, device
        self.verify_seconds = 0.0
        self.params = dict(model.named_parameters())  # after wrapping: DTensors under FSDP2
        self.waiting = [self.params[n] for n in pending]
        self.k_unfrozen = 0
        self.stopped = False  # the user asked to stop (every rank agrees on the step)

    def _loader(self) -> tuple[DataLoader[Any], DistributedSampler[Any]]:
        dataset = build_dataset(self.job)
        sampler: DistributedSampler[Any] = DistributedSampler(
            dataset, dist.get_world_size(), dist.get_rank(), shuffle=True, seed=self.job.seed
        )
        return DataLoader(dataset, batch_size=self.job.batch_size, sampler=sampler), sampler

    def _unfreeze_due(self, epoch: int, opt: torch.optim.Optimizer) -> None:
        for group in self.job.schedule.get(epoch, []):
            names = [n for n, e in self.pending.items() if e == epoch and self._in(n, group)]
            t0 = time.perf_counter()
            now = full_tensors(self.model, names)  # a collective under FSDP2: every rank runs it
            moved = [row.path for row in self.snap.tensors.compare_with(now) if row.moved]
            self.check.moved_while_pending += moved
            self.verify_seconds += time.perf_counter() - t0
            unfreeze(self.model, group)  # releases the group's BatchNorm statistics
            self.k_unfrozen += 1
            lr = self.job.lr / ULMFIT_LR_FACTOR**self.k_unfrozen
            new = [self.params[n] for n in names]
            if new:
                opt.add_param_group({"params": new, "lr": lr})
            ids = {id(p) for p in new}
            self.waiting = [p for p in self.waiting if id(p) not in ids]
            self.check.unfreeze_events.append((epoch, group, lr, len(new)))

    @staticmethod
    def _in(name: str, group: str) -> bool:
        return group in ("", name) or name.startswith(group + ".")

    def run(self) -> None:
        job, check = self.job, self.check
        loader, sampler = self._loader()
        plan = plan_steps(job.epochs, job.steps, len(loader))
        total = check.total_steps = plan.total_steps
        start = [p for n, p in self.params.items() if p.requires_grad and n not in self.pending]
        opt = make_optimizer(job.optimizer, start, job.lr)
        self.wrapped.train()  # frozen BatchNorm layers stay in eval: their policy pins it
        t_start = time.perf_counter()
        step = 0
        live = ProgressWriter(job.out_dir) if job.live and check.rank == 0 else None
        for epoch in range(1, plan.epochs + 1):
            sampler.set_epoch(epoch)
            self._unfreeze_due(epoch, opt)
            t_epoch, loss_sum, correct, seen = time.perf_counter(), 0.0, 0.0, 0
            for x, labels in loader:
                if step >= total:
                    break
                if job.live and stop_agreed(job.out_dir, self.device):
                    self.stopped = True
                    break
                where = f"batch {step + 1} (epoch {epoch}) on rank {check.rank}"
                y = class_labels(labels, job.num_classes, where)  # 0.9 is not silently class 0
                require_finite_inputs(x, where)  # before BatchNorm statistics see them
                loss, acc, dt = self._step(x.to(self.device), y.to(self.device), opt)
                step += 1
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {loss} at step {step} on rank {check.rank}; try a lower "
                        f"lr (lr={job.lr:g})"
                    )
                if live is not None:
                    live.step(step, total, epoch, loss, acc)
                check.step_loss.append(loss)
                check.step_acc.append(acc)
                check.step_seconds.append(dt)
                n = int(y.shape[0])
                check.samples += n
                loss_sum, correct, seen = loss_sum + loss * n, correct + acc * n, seen + n
            check.epochs = epoch
            check.epoch_seconds.append(time.perf_counter() - t_epoch)
            if seen:
                check.epoch_loss.append(loss_sum / seen)
                check.epoch_acc.append(correct / seen)
            if self.stopped:
                break
        if live is not None:
            live.close()
        check.train_seconds = time.perf_counter() - t_start

    def _step(
        self, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer
    ) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        out = self.wrapped(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in self.waiting:
            p.grad = None  # not yet unfrozen: its (synchronised) gradient is not used
        opt.step()
        acc = float((out.detach().argmax(1) == y).float().mean())
        return float(loss.detach()), acc, time.perf_counter() - t0
