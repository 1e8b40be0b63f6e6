"""finetune(lr_groups=..., unfreeze_schedule="head-then-all"): rates checked step by step."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from freeze_widgets import FineTuneReport, finetune, freeze_to
from freeze_widgets.training.report import StepEvent
from freeze_widgets.training.schedule import describe_rates, resolve_schedule, schedule_rates
from tests.conftest import model_fingerprint


def mlp() -> nn.Sequential:
    """Top-level groups "0", "2", "4" (the ReLUs have no parameters); "4" is the head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)
    )


def vectors(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def fastai_even_mults(start: float, stop: float, n: int) -> list[float]:
    step = (stop / start) ** (1 / (n - 1))
    return [start * step**i for i in range(n)]


def run(model: nn.Module, **kwargs: Any) -> tuple[list[StepEvent], FineTuneReport]:
    events: list[StepEvent] = []
    report = finetune(
        model, vectors(), batch_size=16, optimizer="sgd", callback=events.append, **kwargs
    )
    return events, report


def close(a: tuple[float, ...], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-12) for x, y in zip(a, b, strict=True)
    )


def test_head_then_all_rates_step_by_step() -> None:
    model = mlp()
    freeze_to(model, -1)
    lr = 1e-2
    planned = schedule_rates(
        model, "head-then-all", resolve_schedule(model, "head-then-all", 3), lr
    )
    text = describe_rates("head-then-all", planned, lr)
    events, report = run(model, epochs=3, lr=lr, unfreeze_schedule="head-then-all")
    spread = fastai_even_mults(lr / 2 / 100, lr / 2, 3)  # fastai: slice(base_lr/100, base_lr)
    assert [e.step for e in events] == list(range(1, 13))  # 64 / 16 = 4 steps an epoch
    for e in events:
        want = [lr] if e.epoch == 1 else [lr / 2, spread[0], spread[1]]
        assert close(e.lrs, want), (e.step, e.lrs, want)
    assert [(u.epoch, u.group) for u in report.unfreeze_events] == [(2, "0"), (2, "2")]
    assert text.splitlines() == [
        "epoch 1: the trainable groups at lr 0.01",
        "epoch 2: groups already training drop to lr 0.005",
        f"epoch 2: unfreeze 0 at lr {spread[0]:.3g}",
        f"epoch 2: unfreeze 2 at lr {spread[1]:.3g}",
    ]
    assert report.ok and all(p.requires_grad for p in model.parameters())


def test_lr_groups_layer_decay_and_lr_min_set_each_group() -> None:
    events, report = run(mlp(), steps=3, lr=1e-2, lr_groups={"layer_decay": 0.5})
    assert all(close(e.lrs, [2.5e-3, 5e-3, 1e-2]) for e in events) and len(events) == 3
    assert report.optimizer_findings == []
    events, _ = run(mlp(), steps=2, lr=1e-2, lr_groups={"lr_min": 1e-4})
    assert all(close(e.lrs, fastai_even_mults(1e-4, 1e-2, 3)) for e in events)


def test_lr_groups_with_head_then_all_keeps_names_and_halves_every_group() -> None:
    model = mlp()
    freeze_to(model, -1)
    events, report = run(
        model,
        epochs=2,
        lr=1e-2,
        unfreeze_schedule="head-then-all",
        lr_groups={"lr_mult": {"4.bias": 3.0}},
    )
    spread = fastai_even_mults(5e-5, 5e-3, 3)
    assert close(events[0].lrs, [1e-2, 3e-2])  # weight and bias of the head, own groups
    assert close(events[-1].lrs, [5e-3, 1.5e-2, spread[0], spread[1]])
    # torch refuses a group without param_names beside named ones: the released groups
    # joined with their names, and the optimizer holds exactly the trainable parameters.
    assert report.optimizer_findings == []


def test_bad_lr_groups_and_schedules_leave_the_model_as_it_was() -> None:
    model = mlp()
    freeze_to(model, -1)
    before = model_fingerprint(model)
    with pytest.raises(ValueError, match=r"Unknown lr_groups key 'layer_dcay'.*layer_decay"):
        finetune(model, vectors(), steps=1, lr_groups={"layer_dcay": 0.5})
    with pytest.raises(ValueError, match=r"lr_mult key 'fc'"):
        finetune(model, vectors(), steps=1, lr_groups={"lr_mult": {"fc": 0.5}})
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\]"):
        finetune(model, vectors(), steps=1, lr_groups={"layer_decay": 2.0})
    with pytest.raises(ValueError, match="needs at least 2 epochs"):
        finetune(model, vectors(), epochs=1, unfreeze_schedule="head-then-all")
    with pytest.raises(ValueError, match="single process only"):
        finetune(model, vectors(), nproc=2, lr_groups={"layer_decay": 0.5})
    assert model_fingerprint(model) == before
    with pytest.raises(ValueError, match=r"no top-level group is frozen.*freeze_to"):
        finetune(mlp(), vectors(), epochs=2, unfreeze_schedule="head-then-all")


def test_weight_decay_is_the_optimizer_default_unless_lr_groups_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[float]] = []
    real = torch.optim.AdamW.step

    def record(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        seen.append([g["weight_decay"] for g in self.param_groups])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    finetune(mlp(), vectors(), steps=1, batch_size=16, lr_groups={"layer_decay": 0.5})
    default = torch.optim.AdamW([nn.Parameter(torch.zeros(1))]).defaults["weight_decay"]
    assert seen[-1] == [default] * 3  # one group per depth group, AdamW's own decay
    finetune(mlp(), vectors(), steps=1, batch_size=16, lr_groups={"weight_decay": 0.1})
    assert sorted(seen[-1]) == [0.0] * 3 + [0.1] * 3  # per depth group: biases 0, weights 0.1
