"""What every rank runs: load, freeze, wrap (DDP or FSDP2), train, verify, gather on rank 0.

Started by torchrun / the elastic launcher (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) or, for
a single process, with a one-rank process group, so both paths run the same code.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from freeze_widgets.distributed.job import JobConfig
from freeze_widgets.distributed.loop import Trainer
from freeze_widgets.distributed.rankcheck import RankCheck, compare, snapshot
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.freezing.targets import freeze, unfreeze
from freeze_widgets.training.head import replace_head

__all__ = ["run_from_file", "run_job"]


def _init_process_group(timeout_s: float, out_dir: Path) -> tuple[torch.device, str]:
    """Join the group torchrun described, or make a one-rank group when run alone.

    The one-rank group's store file lives in the job's own folder, which the caller removes.
    """
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = datetime.timedelta(seconds=max(30.0, timeout_s))
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend, timeout=timeout)
        else:
            store_file = out_dir / "store"
            store = dist.FileStore(  # type: ignore[attr-defined]
                str(store_file), 1
            )
            dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local), backend
    # Share the cores between the local workers (torchrun sets OMP_NUM_THREADS; the API not).
    if "OMP_NUM_THREADS" not in os.environ:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return torch.device("cpu"), backend


def _load_model(job: JobConfig) -> nn.Module:
    if job.model_file is not None:
        model = torch.load(job.model_file, weights_only=False, map_location="cpu")
        if not isinstance(model, nn.Module):
            raise TypeError(f"{job.model_file} holds a {type(model).__name__}, not a module")
        return model
    if job.model_name is None:
        raise ValueError("the job names neither a model file nor a model name")
    from freeze_widgets.models.vision import load_model

    torch.manual_seed(job.seed)  # random weights (offline) must match on every rank
    return load_model(job.model_name, pretrained=job.pretrained)


def _broadcast_from_rank0(model: nn.Module) -> None:
    """Start every rank from rank 0's weights (FSDP2, unlike DDP, does not broadcast)."""
    if dist.get_world_size() > 1:
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                dist.broadcast(t.data, src=0)


def _prepare_pending(
    model: nn.Module, spec: FreezeSpec, schedule: dict[int, list[str]]
) -> dict[str, int]:
    """Make later-unfrozen groups trainable now, statistics still frozen (trap 8/11).

    DDP only synchronises gradients of parameters trainable when it wraps, so a group unfrozen
    at epoch 3 must already be trainable; :class:`~.loop.Trainer` keeps it out of the
    optimizer (its gradients dropped) until then. A ``"frozen"`` BatchNorm policy becomes
    ``"eval"`` there: swapping modules after FSDP2 sharded them is not possible.
    """
    pending: dict[str, int] = {}
    bn = "eval" if spec.bn == "frozen" else spec.bn
    for epoch in sorted(schedule):
        for group in schedule[epoch]:
            unfreeze(model, group)
            freeze(model, group, bn=bn)
            prefix = f"{group}." if group else ""
            for name, p in model.named_parameters():
                if (name == group or name.startswith(prefix)) and name not in pending:
                    pending[name] = epoch
                    p.requires_grad_(True)
    return pending


def _wrap(model: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    model.to(device)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for child in model.children():
            if next(child.parameters(), None) is not None:
                fully_shard(child)
        fully_shard(model)
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _final_state(model: nn.Module, strategy: str) -> dict[str, torch.Tensor]:
    if strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        return {k: v.detach().to("cpu") for k, v in full.items() if isinstance(v, torch.Tensor)}
    return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}


def run_job(job: JobConfig) -> dict[str, Any] | None:
    """Run one rank of ``job``; rank 0 returns (and writes) the merged report as a dict."""
    device, backend = _init_process_group(job.timeout_s, Path(job.out_dir))
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(job.out_dir)
    model = _load_model(job)
    spec = FreezeSpec.from_json(job.spec_json)
    spec.apply(model)
    if job.num_classes is not None:  # after the spec: the new head is trainable, as in finetune
        replace_head(model, job.num_classes, job.seed)
    for p in model.parameters():
        p.grad = None  # a stale gradient with momentum still moves a frozen weight (trap 2)
    pending = _prepare_pending(model, spec, job.schedule)
    _broadcast_from_rank0(model)

    t0 = time.perf_counter()
    snap = snapshot(model, pending)
    verify_s = time.perf_counter() - t0
    wrapped = _wrap(model, job.strategy, device)
    check = RankCheck(rank=rank)
    trainer = Trainer(job, model, wrapped, pending, snap, check, device)
    trainer.run()

    t0 = time.perf_counter()
    # Gathering the full state is needed anyway to hand the trained model back: timed apart.
    final = _final_state(model, job.strategy)
    check.gather_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    compare(snap, final, check)
    checks: list[Any] = [None] * world
    dist.all_gather_object(checks, check)
    check.verify_seconds = verify_s + trainer.verify_seconds + time.perf_counter() - t0
    checks[rank] = check  # own time complete; the others' are at most their gather time short
    if job.save_rank_states:
        torch.save(final, out / f"rank{rank}.pt")
    if rank != 0:
        dist.barrier()
        return None
    from freeze_widgets.distributed.report import merge_ranks

    report = merge_ranks(checks, strategy=job.strategy, nproc=world, backend=backend)
    report.lr, report.optimizer, report.num_classes = job.lr, job.optimizer, job.num_classes
    report.bn_policy = spec.bn
    if trainer.stopped:
        report.stopped_early = True
        report.stop_reason = (
            f"Stop pressed: every rank stopped after {report.steps} of {report.total_steps} steps"
        )
    data = report.to_dict()
    torch.save(final, out / "state.pt")
    (out / "result.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    dist.barrier()
    return data


def run_from_file(job_path: str) -> None:
    """Entry point of a launched worker: run the job, and on failure leave an error file."""
    job = JobConfig.load(Path(job_path))
    try:
        run_job(job)
    except BaseException as exc:
        rank = int(os.environ.get("RANK", "0"))
        info = {
            "rank": rank,
            "time": time.time(),
            "type": type(exc).__name__,
            "message": str(exc).strip().splitlines()[-1] if str(exc).strip() else "",
            "traceback": traceback.format_exc(),
        }
        path = Path(job.out_dir) / f"error_rank{rank}.json"
        path.write_text(json.dumps(info), encoding="utf-8")
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
