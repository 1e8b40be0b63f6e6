"""FreezeGuard: each trap happens for real and is caught with the right cause and step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from freeze_widgets.freezing.targets import freeze
from freeze_widgets.verify.guard import FreezeGuard, FrozenWeightMoved
from freeze_widgets.verify.snapshot import TensorSnapshot, fingerprint

from .conftest import make_seq_bn


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 32, generator=g), torch.randint(0, 2, (8,), generator=g)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, *, set_to_none: bool = True) -> None:
    x, y = _batch()
    opt.zero_grad(set_to_none=set_to_none)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _freeze_by_hand(module: nn.Module) -> None:
    """What users write: requires_grad off, nothing else (the gradient stays)."""
    for p in module.parameters():
        p.requires_grad_(False)


def test_clean_run_reports_nothing_and_removes_hooks() -> None:
    model = make_seq_bn()
    freeze(model, "0", "1")  # bn="eval" by default
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    with FreezeGuard(model, opt, raise_on_violation=True) as guard:
        for _ in range(3):
            _train_step(model, opt)
    assert guard.report.ok, str(guard.report)
    assert guard.report.steps == 3
    assert guard.watched == 4 + 3  # 0.weight/bias, 1.weight/bias + BN's three buffers
    assert "nothing moved" in str(guard.report)
    assert not opt._optimizer_step_post_hooks
    assert not opt._optimizer_step_pre_hooks
    # Independent check: the frozen weights are bitwise unchanged, the head trained.
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in ("0.weight", "0.bias", "1.weight"))
    assert not torch.equal(before["3.weight"], after["3.weight"])


def test_adamw_weight_decay_on_frozen_param_in_optimizer() -> None:
    model = make_seq_bn()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    x, y = _batch()
    nn.functional.cross_entropy(model(x), y).backward()
    _freeze_by_hand(model[0])
    opt.zero_grad(set_to_none=False)  # frozen params keep a zero .grad: AdamW still decays them
    with FreezeGuard(model, opt, keep_copies=True) as guard:
        _train_step(model, opt, set_to_none=False)
    weight = next(v for v in guard.violations if v.path == "0.weight")
    assert weight.cause == "weight_decay"
    assert weight.causes == ("weight_decay",)
    assert weight.step == 1
    # Decoupled decay multiplies by (1 - lr * wd): the largest move is 0.05 * max |w|.
    expected = float((model[0].weight.detach() / (1 - 0.05)).abs().max() * 0.05)
    assert weight.max_abs_diff == pytest.approx(expected, rel=1e-4)
    assert not guard.report.ok
    assert "weight_decay" in str(guard.report)


def test_sgd_momentum_state_from_before_the_freeze() -> None:
    model = make_seq_bn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    _train_step(model, opt)  # builds a momentum buffer for every parameter
    _freeze_by_hand(model[0])
    buf = opt.state[model[0].weight]["momentum_buffer"].clone()
    with FreezeGuard(model, opt, keep_copies=True) as guard:
        _train_step(model, opt, set_to_none=False)  # zero grad, momentum still pushes
    # 0.bias feeds a BatchNorm, so its gradient and momentum are exactly zero: it stays put.
    (v,) = guard.violations
    assert (v.path, v.cause, v.causes) == ("0.weight", "momentum", ("momentum",))
    assert v.max_abs_diff == pytest.approx(float((0.1 * 0.9 * buf).abs().max()), rel=1e-4)


def test_stale_grad_moves_a_just_frozen_param() -> None:
    model = make_seq_bn()
    model.eval()  # keep BN statistics out of this test
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    with FreezeGuard(model, opt) as guard:
        nn.functional.cross_entropy(model(x), y).backward()
        _freeze_by_hand(model[3])  # frozen between backward and step: its grad stays
        opt.step()
    assert {v.path for v in guard.violations} == {"3.weight", "3.bias"}
    assert {v.cause for v in guard.violations} == {"stale_grad"}
    assert math.isnan(guard.violations[0].max_abs_diff)  # no copies kept
    assert guard.watched == 2  # picked up by the pre-step hook, before the step moved it


def test_batchnorm_in_train_mode_updates_frozen_statistics() -> None:
    model = make_seq_bn()
    _freeze_by_hand(model[1])  # requires_grad only: model.train() keeps the BN training
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    with FreezeGuard(model, opt) as guard:
        _train_step(model, opt)
    assert {v.path for v in guard.violations} == {
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert {v.cause for v in guard.violations} == {"bn_train_mode"}


def test_bn_train_policy_can_be_allowed() -> None:
    model = make_seq_bn()
    freeze(model, "1", bn="train")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    with FreezeGuard(model, opt, allow_bn_stats=True) as guard:
        _train_step(model, opt)
    assert guard.report.ok


def test_in_place_write_is_external() -> None:
    model = make_seq_bn()
    freeze(model, "0")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with FreezeGuard(model, opt, keep_copies=True) as guard:
        _train_step(model, opt)
        with torch.no_grad():
            model[0].weight[0, 0] += 0.25
        _train_step(model, opt)
    (v,) = guard.violations
    assert (v.path, v.cause, v.step) == ("0.weight", "external_write", 2)
    assert v.max_abs_diff == pytest.approx(0.25, rel=1e-5)


def test_raise_on_violation_raises_at_the_step() -> None:
    model = make_seq_bn()
    freeze(model, "0")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    guard = FreezeGuard(model, opt, raise_on_violation=True, full_every=1).start()
    _train_step(model, opt)
    _train_step(model, opt)
    with torch.no_grad():
        model[0].bias.mul_(2)
    with pytest.raises(FrozenWeightMoved, match=r"'0\.bias'.*after step 3") as info:
        _train_step(model, opt)
    assert info.value.violation.step == 3
    assert info.value.violation.cause == "external_write"
    guard.stop()
    assert not opt._optimizer_step_post_hooks


def test_an_outside_write_is_found_at_the_next_full_check_with_its_window() -> None:
    model = make_seq_bn()
    freeze(model, "0")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    guard = FreezeGuard(model, opt, raise_on_violation=True, full_every=2).start()
    _train_step(model, opt)
    _train_step(model, opt)  # full check
    with torch.no_grad():
        model[0].bias.mul_(2)
    _train_step(model, opt)  # the optimizer holds no frozen tensor: step 3 checks none
    assert guard.violations == []
    with pytest.raises(FrozenWeightMoved, match=r"'0\.bias'.*between step 2 and step 4"):
        _train_step(model, opt)
    guard.stop()
    report = guard.report
    assert (report.steps, report.full_checks, report.full_every) == (4, 3, 2)
    # Frozen 0.weight/0.bias are never held by the optimizer nor given a .grad: checked only in
    # the three full checks (steps 2, 4, exit).
    assert dict(report.checked) == {"0.weight": 3, "0.bias": 3}
    assert "0 checked after the steps that could move them, 2 only every 2 steps" in str(report)


def test_exit_check_and_global_hook_without_optimizer() -> None:
    model = make_seq_bn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    _train_step(model, opt)
    _freeze_by_hand(model[3])
    with FreezeGuard(model, check="exit") as guard:
        _train_step(model, opt, set_to_none=False)
        _train_step(model, opt, set_to_none=False)
        assert guard.violations == []  # nothing checked before exit
    assert guard.report.steps == 2
    assert guard.report.checks == 1
    assert {(v.path, v.step, v.cause) for v in guard.violations} == {
        ("3.weight", 2, "momentum"),
        ("3.bias", 2, "momentum"),
    }


def test_unfreezing_inside_the_guard_is_not_a_violation() -> None:
    model = make_seq_bn()
    freeze(model, "0")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with FreezeGuard(model, opt) as guard:
        _train_step(model, opt)
        for p in model[0].parameters():
            p.requires_grad_(True)
        _train_step(model, opt)
    assert guard.report.ok


def test_bad_arguments_raise_type_and_value_errors() -> None:
    with pytest.raises(TypeError, match="model"):
        FreezeGuard(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer"):
        FreezeGuard(nn.Linear(2, 2), optimizer="adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="check"):
        FreezeGuard(nn.Linear(2, 2), check="epoch")  # type: ignore[arg-type]
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="full_every"):
            FreezeGuard(nn.Linear(2, 2), full_every=bad)  # type: ignore[arg-type]


def test_fingerprint_sees_single_bit_changes_and_swaps_across_blocks() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1000, generator=g)
    ref = fingerprint(base)
    for index in (0, 63, 64, 999):
        for bit in (0, 17, 31):
            ints = base.clone().view(torch.int32)
            ints[index] ^= 1 << bit if bit < 31 else -(1 << 31)
            assert not fingerprint(ints.view(torch.float32)).same_as(ref), (index, bit)
    swapped = base.clone()
    swapped[[3, 500]] = swapped[[500, 3]]
    assert not fingerprint(swapped).same_as(ref)
    assert fingerprint(base.clone()).same_as(ref)
    assert not fingerprint(torch.tensor([0.0])).same_as(fingerprint(torch.tensor([-0.0])))


def test_snapshot_rows_for_a_verification_table() -> None:
    model = make_seq_bn()
    freeze(model, "0", "1")
    snap = TensorSnapshot.take(model, scope="all", keep_copies=True)
    with torch.no_grad():
        model[3].weight.add_(1.0)
    rows = {r.path: r for r in snap.compare()}
    assert set(rows) == {n for n, _ in model.named_parameters()} | {
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert rows["3.weight"].moved and not rows["3.weight"].frozen
    assert rows["3.weight"].max_abs_diff == pytest.approx(1.0)
    assert rows["0.weight"].frozen and not rows["0.weight"].moved
    assert rows["1.running_mean"].kind == "buffer" and rows["1.running_mean"].bn_policy == "eval"
