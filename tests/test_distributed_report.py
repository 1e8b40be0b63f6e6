"""The per-rank comparison and the merge of ranks, in one process (no workers needed)."""

from __future__ import annotations

import torch

from freeze_widgets import freeze
from freeze_widgets.distributed.rankcheck import RankCheck, compare, snapshot
from freeze_widgets.distributed.report import DistributedFineTuneReport, merge_ranks
from freeze_widgets.verify.snapshot import digest
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


def test_merged_report_carries_rank_0s_curves_as_copies() -> None:
    model = tiny_net()
    final = {k: v.clone() for k, v in model.state_dict().items()}
    checks = [_check(rank, final, model) for rank in (1, 0)]
    for check in checks:  # every curve of each rank distinct: rank r holds r + 0.1 * i
        check.step_loss = [check.rank + 0.1, check.rank + 0.2]
        check.step_acc = [check.rank + 0.3, check.rank + 0.4]
        check.step_seconds = [check.rank + 0.5, check.rank + 0.6]
        check.epoch_loss = [check.rank + 0.7]
        check.epoch_acc = [check.rank + 0.8]
        check.epoch_seconds = [check.rank + 0.9]
    report = merge_ranks(checks, nproc=2)
    assert (report.step_loss, report.step_acc, report.step_seconds) == (
        [0.1, 0.2],
        [0.3, 0.4],
        [0.5, 0.6],
    )
    assert (report.epoch_loss, report.epoch_acc, report.epoch_seconds) == ([0.7], [0.8], [0.9])
    assert report.steps == 2 and report.final_loss == 0.2
    checks[1].step_loss.append(9.0)  # rank 0's check (sorted second here) changes later...
    assert report.step_loss == [0.1, 0.2]  # ...and the report keeps its own list


def test_one_row_type_and_status_rule_for_one_process_and_each_rank() -> None:
    from freeze_widgets.training import VerificationRow
    from freeze_widgets.verify.rows import snapshot as single_snapshot
    from freeze_widgets.verify.rows import verify

    model = tiny_net()
    freeze(model, "0", "1")
    single, per_rank = single_snapshot(model), snapshot(model, {})
    with torch.no_grad():
        model[0].weight.add_(1.0)  # frozen: MOVED
        model[8].weight.add_(1.0)  # trainable and moved: ok; 8.bias unchanged: no gradient path
    check = RankCheck(rank=0, total_steps=1, epochs=1)
    compare(per_rank, {k: v.clone() for k, v in model.state_dict().items()}, check)
    one = {r.name: (r.status, r.was_frozen, r.changed) for r in verify(single, {}, steps=1)}
    ranked = {r.name: (r.status, r.was_frozen, r.changed) for r in check.rows}
    assert one == ranked
    assert (one["0.weight"][0], one["8.weight"][0], one["8.bias"][0]) == (
        "MOVED", "ok", "no gradient path",
    )  # fmt: skip
    assert all(type(r) is VerificationRow for r in check.rows)
