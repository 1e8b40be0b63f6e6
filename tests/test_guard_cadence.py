"""FreezeGuard's per-step cost model and its blind spots (issues 19 items 3-4 and 21)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from freeze_widgets.checks.audit import audit_optimizer
from freeze_widgets.freezing.targets import freeze
from freeze_widgets.integrations._common import GuardSession
from freeze_widgets.verify.guard import FreezeGuard

from .conftest import make_seq_bn


def _step(model: nn.Module, opt: torch.optim.Optimizer, *, set_to_none: bool = True) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 32, generator=g), torch.randint(0, 2, (8,), generator=g)
    opt.zero_grad(set_to_none=set_to_none)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _by_hand(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def test_per_step_checks_only_what_the_step_can_move() -> None:
    model = make_seq_bn()
    freeze(model, "0", "1")
    # 3.bias frozen but still held by the optimizer: the step can move it, so it is checked.
    model[3].bias.requires_grad_(False)
    opt = torch.optim.SGD([model[3].weight, model[3].bias], lr=0.1)
    model.train()
    with FreezeGuard(model, opt, full_every=0) as guard:
        for _ in range(4):
            _step(model, opt)
    checked = dict(guard.report.checked)
    assert checked["3.bias"] == 4 + 1  # after each step, and at exit
    assert all(checked[p] == 1 for p in ("0.weight", "0.bias", "1.weight", "1.running_mean"))
    assert guard.report.full_checks == 1 and guard.report.ok
    assert "1 checked after the steps that could move them, 7 only at exit" in str(guard.report)


def test_a_replaced_frozen_parameter_is_followed_and_its_write_found() -> None:
    model = make_seq_bn()
    freeze(model, "0")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with FreezeGuard(model, opt, keep_copies=True) as guard:
        _step(model, opt)
        model[0].weight = nn.Parameter(model[0].weight.detach().clone(), requires_grad=False)
        _step(model, opt)
        with torch.no_grad():
            model[0].weight[0, 0] += 0.5  # written through the new object
        _step(model, opt)
    (v,) = guard.violations
    assert (v.path, v.cause) == ("0.weight", "external_write")
    assert v.max_abs_diff == pytest.approx(0.5)


def test_a_frozen_parameter_replaced_by_other_values_is_named_as_replaced() -> None:
    model = make_seq_bn()
    freeze(model, "0")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with FreezeGuard(model, opt) as guard:
        _step(model, opt)
        model[0].weight = nn.Parameter(torch.zeros_like(model[0].weight), requires_grad=False)
        _step(model, opt)
    (v,) = guard.violations
    assert (v.path, v.cause, v.step) == ("0.weight", "replaced", 1)
    assert "load the values into the existing parameter" in str(v)


def test_batchnorm_frozen_after_the_guard_started_has_its_statistics_watched() -> None:
    model = make_seq_bn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    with FreezeGuard(model, opt) as guard:
        _step(model, opt)
        _by_hand(model[1])  # BN parameters frozen by hand: the layer still trains its stats
        _step(model, opt)
    moved = {v.path: v.cause for v in guard.violations if v.kind == "buffer"}
    assert moved == dict.fromkeys(
        ("1.running_mean", "1.running_var", "1.num_batches_tracked"), "bn_train_mode"
    )
    assert all(v.step == 2 for v in guard.violations if v.kind == "buffer")


def test_unfreezing_a_batchnorm_layer_releases_its_statistics() -> None:
    model = make_seq_bn()
    freeze(model, "0", "1", bn="train")  # statistics keep updating while frozen...
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    with FreezeGuard(model, opt, full_every=1) as guard:
        for p in model[1].parameters():
            p.requires_grad_(True)  # ...and the layer is unfrozen before any step
        _step(model, opt)
    assert guard.report.ok, str(guard.report)
    assert guard.watched == 2


def test_meta_model_is_refused_not_reported_clean() -> None:
    with torch.device("meta"):
        model = nn.Linear(4, 4)
    model.weight.requires_grad_(False)
    guard = FreezeGuard(model)
    with pytest.raises(ValueError, match="meta device"):
        guard.start()
    assert not guard.active


def test_report_counts_tensors_unfrozen_during_the_run() -> None:
    model = make_seq_bn()
    freeze(model, "0")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with FreezeGuard(model, opt, full_every=1) as guard:
        with torch.no_grad():
            model[0].weight.add_(1.0)
        _step(model, opt)
        for p in model[0].parameters():
            p.requires_grad_(True)
    assert guard.watched == 0  # nothing frozen any more...
    assert guard.report.watched == 2  # ...but two were watched, and one of them moved
    assert "2 frozen tensors watched" in str(guard.report)
    assert [v.path for v in guard.violations] == ["0.weight"]


class _DuckSGD:
    """Looks like an optimizer, is not one: torch's step hooks never see it."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.param_groups = [{"params": params}]

    def step(self) -> None:
        with torch.no_grad():
            for p in self.param_groups[0]["params"]:
                p.sub_(0.1)


def test_a_duck_typed_optimizer_is_refused_or_said_unseen() -> None:
    model = make_seq_bn()
    with pytest.raises(TypeError, match="cannot be hooked"):
        FreezeGuard(model, _DuckSGD(list(model.parameters())))  # type: ignore[arg-type]
    freeze(model, "0")
    duck = _DuckSGD(list(model[0].parameters()))
    with FreezeGuard(model) as guard:
        for _ in range(3):
            duck.step()
    assert guard.report.steps == 0
    assert "with no optimizer step seen (only torch.optim.Optimizer steps are hooked)" in str(
        guard.violations[0]
    )


MOMENTUM_CASES = [
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (torch.optim.SGD, {"lr": 0.1}),
    (torch.optim.Adam, {"lr": 0.1}),
    (torch.optim.AdamW, {"lr": 0.1, "weight_decay": 0.0}),
    (torch.optim.NAdam, {"lr": 0.1}),
    (torch.optim.RAdam, {"lr": 0.1}),
    (torch.optim.RMSprop, {"lr": 0.1, "momentum": 0.9}),
    (torch.optim.RMSprop, {"lr": 0.1}),
    (torch.optim.Adagrad, {"lr": 0.1}),
    (torch.optim.Adamax, {"lr": 0.1}),
]


@pytest.mark.parametrize(("cls", "kwargs"), MOMENTUM_CASES)
def test_audit_and_guard_agree_on_momentum_and_match_what_moved(
    cls: type[torch.optim.Optimizer], kwargs: dict[str, float]
) -> None:
    model = make_seq_bn()
    model.eval()  # statistics out of the way
    opt = cls(model.parameters(), **kwargs)
    _step(model, opt)  # state for every parameter
    _by_hand(model[3])
    before = model[3].weight.detach().clone()
    says_momentum = any("momentum" in f.message for f in audit_optimizer(model, opt))
    with FreezeGuard(model, opt) as guard:
        model.zero_grad(set_to_none=False)  # a zero .grad: only momentum can move it now
        opt.step()
    moved = not torch.equal(before, model[3].weight)  # the independent oracle
    blamed = any("momentum" in v.causes for v in guard.violations if v.path == "3.weight")
    assert says_momentum == blamed == moved


def test_several_optimizers_are_audited_together() -> None:
    model = make_seq_bn()
    gen = torch.optim.SGD(model[0].parameters(), lr=0.1)
    rest = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("0.")])
    assert audit_optimizer(model, [gen, rest]) == []
    assert {f.kind for f in audit_optimizer(model, gen)} == {"trainable_not_in_optimizer"}
    twice = audit_optimizer(model, [gen, torch.optim.SGD(model[0].parameters())])
    assert ("param_in_two_groups", "0.weight") in {(f.kind, f.path) for f in twice}
    assert "optimizer 0 param group 0 and again in optimizer 1 param group 0" in twice[0].message


def test_a_session_left_active_by_a_failed_run_is_ended_at_the_next_start() -> None:
    model = make_seq_bn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    session = GuardSession(None, raise_on_violation=False, keep_copies=False)
    session.begin(model, [opt])
    # transformers has no exception event: a failed train() never calls end().
    session.begin(model, [opt])
    assert len(opt._optimizer_step_post_hooks) == 1  # the first run's hooks are gone
    session.end()
    assert not opt._optimizer_step_post_hooks and not opt._optimizer_step_pre_hooks


def test_zero_redundancy_optimizer_momentum_is_named_and_audited(tmp_path: Path) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = make_seq_bn()
        model.eval()
        opt = ZeroRedundancyOptimizer(
            model.parameters(), optimizer_class=torch.optim.SGD, lr=0.1, momentum=0.9
        )
        _step(model, opt)
        _by_hand(model[3])
        findings = audit_optimizer(model, opt)
        assert any(f.path == "3.weight" and "momentum" in f.message for f in findings)
        with FreezeGuard(model, opt) as guard:
            model.zero_grad(set_to_none=False)
            opt.step()
        causes = {v.path: v.cause for v in guard.violations}
        assert causes["3.weight"] == "momentum"
    finally:
        dist.destroy_process_group()


def test_session_checks_the_wrapped_model_against_the_spec() -> None:
    from freeze_widgets.freezing.spec import FreezeSpec

    model = make_seq_bn()
    session = GuardSession(FreezeSpec(frozen=("0", "1")), raise_on_violation=False,
                           keep_copies=False)  # fmt: skip
    session.apply_spec(model)  # what the callbacks do before the optimizer is built

    class Wrapper(nn.Module):  # names its child "module", as DDP does
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.module = inner

    model[0].weight.requires_grad_(True)  # the wrapper re-registered it as trainable
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    session.begin(model, [opt], Wrapper(model))
    session.end()
    wrap = [(f.kind, f.path) for f in session.findings if f.kind.endswith("_after_wrap")]
    assert wrap == [("trainable_after_wrap", "0.weight")]
