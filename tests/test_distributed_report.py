"""The per-rank comparison and the merge of ranks, in one process (no workers needed)."""

from __future__ import annotations

import torch

from freeze_widgets import freeze
from freeze_widgets.distributed.rankcheck import RankCheck, compare, digest, snapshot
from freeze_widgets.distributed.report import DistributedFineTuneReport, merge_ranks
from tests.distributed_helpers import tiny_net


def _check(rank: int, final: dict[str, torch.Tensor], snap_model: torch.nn.Module) -> RankCheck:
    check = RankCheck(rank=rank, total_steps=1, epochs=1, step_loss=[1.0])
    compare(snapshot(snap_model, {}), final, check)
    return check


def test_identical_ranks_with_untouched_frozen_part_are_ok() -> None:
    model = tiny_net()
    freeze(model, "0", "1")
    final = {k: v.clone() for k, v in model.state_dict().items()}
    final["8.weight"] += 1.0
    report = merge_ranks([_check(1, final, model), _check(0, final, model)], nproc=2)
    assert report.ok and report.ranks_agree
    assert [v.rank for v in report.ranks] == [0, 1]
    rows = {r.name: r for r in report.verification}
    assert rows["0.weight"].status == "ok" and rows["0.weight"].was_frozen
    assert rows["8.weight"].changed and rows["8.bias"].status == "no gradient path"


def test_a_frozen_tensor_moved_on_one_rank_is_reported_with_that_rank() -> None:
    model = tiny_net()
    freeze(model, "0", "1")
    same = {k: v.clone() for k, v in model.state_dict().items()}
    moved = {k: v.clone() for k, v in same.items()}
    moved["1.running_mean"] += 0.5
    report = merge_ranks([_check(0, same, model), _check(1, moved, model)], nproc=2)
    assert not report.ok
    row = {r.name: r for r in report.verification}["1.running_mean"]
    assert row.status == "MOVED" and "rank(s) 1" in row.note and row.max_abs_change == 0.5
    assert [v.frozen_unchanged for v in report.ranks] == [True, False]


def test_trainable_tensors_that_differ_across_ranks_fail_the_report() -> None:
    model = tiny_net()
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: v.clone() for k, v in a.items()}
    b["8.bias"][0] += 1e-7  # one ulp-scale difference is enough
    report = merge_ranks([_check(0, a, model), _check(1, b, model)], nproc=2)
    assert not report.ranks_agree and not report.ok
    assert {r.name for r in report.verification if r.status == "RANKS DIFFER"} == {"8.bias"}


def test_digest_is_bitwise() -> None:
    t = torch.randn(5)
    assert digest(t) == digest(t.clone())
    assert digest(t) != digest(t.double())  # same values, other dtype
    u = t.clone()
    u[2] = torch.nextafter(u[2], torch.tensor(10.0))
    assert digest(t) != digest(u)


def test_report_round_trips_through_json_data() -> None:
    model = tiny_net()
    final = model.state_dict()
    report = merge_ranks([_check(0, final, model)], nproc=1, strategy="fsdp")
    again = DistributedFineTuneReport.from_dict(report.to_dict())
    assert again == report and again.summary() == report.summary()
