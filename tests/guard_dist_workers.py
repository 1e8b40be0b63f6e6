"""Worker processes for the guard's 2-process tests (spawned by name, so importable)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.freezing.targets import freeze
from freeze_widgets.verify.ranks import check_after_wrap
from freeze_widgets.verify.snapshot import local
from tests.distributed_helpers import tiny_net

SCENARIOS = ("clean", "frozen_write", "diverge", "retrainable")


def _wrap(model: nn.Module, strategy: str) -> nn.Module:
    if strategy == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    for name in ("0", "1", "3", "4"):  # the head "8" stays a plain, replicated tensor
        fully_shard(model.get_submodule(name))
    return model


def _scenario(rank: int, strategy: str, scenario: str) -> dict[str, Any]:
    from freeze_widgets.verify.guard import FreezeGuard

    model = tiny_net(seed=0)  # the same start on every rank
    freeze(model, "0", "1")
    spec = FreezeSpec.from_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    wrapped = _wrap(model, strategy)
    if scenario == "retrainable" and rank == 1:
        model[0].weight.requires_grad_(True)  # what a re-registering wrapper does
    findings = [f.path for f in check_after_wrap(wrapped, spec)]
    if scenario == "retrainable":
        # Found before training, as it must be: with one rank's frozen weight now needing a
        # gradient, FSDP2's reduce-scatter would wait forever for the other rank.
        return {"findings": findings}
    trainable = [p for n, p in model.named_parameters() if not n.startswith(("0.", "1."))]
    opt = torch.optim.SGD(trainable, lr=0.1)
    model.train()
    g = torch.Generator().manual_seed(0)  # the same batches on every rank: replicas agree
    with FreezeGuard(model, opt, full_every=2) as guard:
        for step in range(3):
            x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 4, (4,), generator=g)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(wrapped(x), y).backward()
            opt.step()
            if step == 1 and rank == 1:
                with torch.no_grad():
                    if scenario == "frozen_write":
                        local(model[0].weight).add_(1.0)
                    if scenario == "diverge":
                        model[8].bias.add_(1e-3)
    ranks = guard.report.ranks
    assert ranks is not None
    return {
        "findings": findings,
        "violations": [(r, v.path, v.cause) for r, v in ranks.violations],
        "differ": [(n, [list(g) for g in groups]) for n, groups in ranks.differ],
        "ok": guard.report.ok,
        "text": str(guard.report),
    }


def run(rank: int, world: int, store_path: str, strategy: str, out_dir: str) -> None:
    """One rank: every scenario in turn, results written to ``rank{rank}.json``."""
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        results = {s: _scenario(rank, strategy, s) for s in SCENARIOS}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results), encoding="utf-8")
    finally:
        dist.destroy_process_group()
