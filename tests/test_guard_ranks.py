"""FreezeGuard in users' own 2-process loops (gloo): DDP and FSDP2, clean and with faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp

from tests.guard_dist_workers import run

WORLD = 2


def _launch(strategy: str, tmp_path: Path) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=run, args=(r, WORLD, str(tmp_path / "store"), strategy, str(tmp_path)))
        for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=240)
    finally:
        for p in procs:  # always reaped, whatever happened
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    assert [p.exitcode for p in procs] == [0] * WORLD
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_guard_names_each_fault_with_its_rank(strategy: str, tmp_path: Path) -> None:
    ranks = _launch(strategy, tmp_path)
    for r in ranks:  # the gathered verdict is the same on every rank
        assert r["clean"]["ok"] and r["clean"]["findings"] == [] and r["clean"]["differ"] == []
        assert [v[:2] for v in r["frozen_write"]["violations"]] == [[1, "0.weight"]]
        assert r["frozen_write"]["violations"][0][2] == "external_write"
        differ = dict(r["diverge"]["differ"])
        # DDP averages the gradients, so only the written bias differs; the head outside
        # fully_shard has unsynchronised gradients, so there the divergence spreads to its weight.
        assert set(differ) == ({"8.bias"} if strategy == "ddp" else {"8.bias", "8.weight"})
        assert all(groups == [[0], [1]] for groups in differ.values())
        assert "differs across ranks (ranks 0 vs ranks 1)" in r["diverge"]["text"]
        assert not r["diverge"]["ok"] and not r["frozen_write"]["ok"]
        if strategy == "ddp":  # averaged gradients: the frozen write did not spread
            assert r["frozen_write"]["differ"] == []
    # The post-wrap check runs per rank: only rank 1 re-registered a trainable parameter.
    assert [r["retrainable"]["findings"] for r in ranks] == [[], ["0.weight"]]
