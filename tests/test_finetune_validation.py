"""finetune checks the data against the model first and leaves the model exactly as it was."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from freeze_widgets import finetune, freeze


def _fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """Everything a failed call must leave unchanged, compared bitwise."""
    state = [(k, v.clone()) for k, v in model.state_dict().items()]
    grads = [(n, p.requires_grad) for n, p in model.named_parameters()]
    kinds = [(n, type(m).__name__, m.training) for n, m in model.named_modules()]
    return state, grads, kinds


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    (sa, ga, ka), (sb, gb, kb) = a, b
    return (
        ga == gb
        and ka == kb
        and all(na == nb and torch.equal(ta, tb) for (na, ta), (nb, tb) in zip(sa, sb, strict=True))
    )


@pytest.fixture
def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    )  # fmt: skip
    freeze(model, "0", "1")
    return model


def test_labels_beyond_num_classes_fail_before_any_change(small_cnn: nn.Module) -> None:
    data = TensorDataset(torch.randn(8, 3, 8, 8), torch.arange(8) % 5)
    before = _fingerprint(small_cnn)
    with pytest.raises(
        ValueError, match=r"labels run from 0 to 4, but num_classes=2.*num_classes=5"
    ):
        finetune(small_cnn, data, num_classes=2, steps=1, batch_size=4)
    assert _same(before, _fingerprint(small_cnn))


def test_inputs_the_model_cannot_take_fail_and_the_head_is_not_replaced(
    small_cnn: nn.Module,
) -> None:
    one_channel = TensorDataset(torch.randn(8, 1, 8, 8), torch.arange(8) % 4)
    head = small_cnn[5]
    before = _fingerprint(small_cnn)
    with pytest.raises(ValueError, match=r"cannot take the data.*\(2, 1, 8, 8\)"):
        finetune(small_cnn, one_channel, steps=1, batch_size=4)  # 4 classes: a new head first
    assert small_cnn[5] is head
    assert _same(before, _fingerprint(small_cnn))


def test_bn_frozen_policy_is_undone_when_the_forward_check_fails(small_cnn: nn.Module) -> None:
    bad = TensorDataset(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    before = _fingerprint(small_cnn)
    with pytest.raises(ValueError, match="cannot take the data"):
        finetune(small_cnn, bad, steps=1, bn="frozen", num_classes=3)
    assert _same(before, _fingerprint(small_cnn))


def test_meta_model_is_a_clear_error() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"meta device.*to_empty"):
        finetune(model, steps=1)


def test_wrong_model_type_names_the_argument() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        finetune(None, steps=1)  # type: ignore[arg-type]


def test_a_valid_run_still_trains(small_cnn: nn.Module) -> None:
    data = TensorDataset(torch.randn(16, 3, 8, 8), torch.arange(16) % 3)
    report = finetune(small_cnn, data, steps=2, batch_size=8, optimizer="sgd")
    assert report.ok and report.steps == 2 and not report.head_replaced
    assert report.optimizer_findings == []  # the audit users run on their own loops, clean here


def test_nproc_dispatches_to_the_distributed_runner(
    small_cnn: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    from freeze_widgets import run

    seen: dict[str, Any] = {}

    def fake(model: nn.Module, data: Any, **kwargs: Any) -> str:
        seen.update(kwargs, model=model)
        return "merged report"

    monkeypatch.setattr(run, "finetune_distributed", fake)
    result = finetune(small_cnn, steps=3, nproc=2, strategy="fsdp", lr=0.01)
    assert result == "merged report"
    assert seen["model"] is small_cnn and seen["nproc"] == 2 and seen["strategy"] == "fsdp"
    assert seen["steps"] == 3 and seen["lr"] == 0.01
    with pytest.raises(ValueError, match="single process only"):
        finetune(small_cnn, steps=1, nproc=2, augment=True)
