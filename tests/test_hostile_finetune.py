"""A failed fine-tune leaves the model exactly as it was; a stop keeps what was trained.

Issue 19, item 1 (and the label cases of item 2): every failure part-way through training
(an exception, a bad batch, a NaN loss, KeyboardInterrupt, a batch BatchNorm refuses, NaN/inf
inputs) is rolled back bit for bit, checked with the shared model fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from freeze_widgets import finetune, freeze
from freeze_widgets.training import NonFiniteLossError, StepEvent

from .conftest import model_fingerprint


def small_net(out: int = 3) -> nn.Sequential:
    """Conv + BatchNorm (frozen stem, trainable body) + a head of ``out`` classes."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, out),
    )
    freeze(model, "0", "1", bn="eval")
    return model


def images(n: int = 16, classes: int = 4, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % classes)


def _fails_unchanged(
    model: nn.Module,
    error: type[BaseException],
    match: str | None,
    *,
    part_way: bool = True,
    **kw: Any,
) -> None:
    """``finetune(model, **kw)`` raises ``error`` and the model's fingerprint is unchanged."""
    before = model_fingerprint(model)
    with pytest.raises(error, match=match) as info:
        finetune(model, **{"batch_size": 4, "num_classes": 4, **kw})
    assert model_fingerprint(model) == before
    if part_way:  # the error says the model was put back
        assert any("restored" in note for note in getattr(info.value, "__notes__", []))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_named_before_they_reach_batchnorm(bad: float) -> None:
    data = images()
    data.tensors[0][9, 1, 2, 3] = bad  # item 9: the 3rd batch of 4, unshuffled
    loader = DataLoader(data, batch_size=4)
    model = small_net()
    _fails_unchanged(model, ValueError, r"batch 3 \(epoch 1\): the inputs hold", data=loader)
    # What the issue saw: clean inputs give finite outputs in eval mode afterwards.
    assert torch.isfinite(model.eval()(torch.randn(2, 3, 8, 8))).all()


def test_nan_inputs_in_resnet18_leave_no_nan_in_its_batchnorm(resnet18: nn.Module) -> None:
    freeze(resnet18, "layer1")  # layer2..4 BatchNorm layers train and would take the NaN
    x = torch.randn(4, 3, 32, 32)
    x[2, 0, 5, 5] = float("nan")
    data = DataLoader(TensorDataset(x, torch.tensor([0, 1, 2, 3])), batch_size=4)
    _fails_unchanged(resnet18, ValueError, "NaN", data=data, steps=1)
    assert all(torch.isfinite(b).all() for b in resnet18.buffers())
    assert resnet18.fc.out_features == 1000


def test_a_callback_raising_at_step_3_undoes_steps_1_and_2_and_the_head() -> None:
    def boom(event: StepEvent) -> None:
        if event.step == 3:
            raise RuntimeError("callback failed")

    _fails_unchanged(small_net(), RuntimeError, "callback failed", data=images(), callback=boom)


def test_keyboard_interrupt_part_way_is_rolled_back() -> None:
    def interrupt(event: StepEvent) -> None:
        if event.step == 2:
            raise KeyboardInterrupt

    _fails_unchanged(small_net(), KeyboardInterrupt, None, data=images(), callback=interrupt)


class _Stream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batches of 4 images; batch ``bad_batch`` carries the label ``bad_label``."""

    def __init__(self, bad_label: Any, bad_batch: int = 3) -> None:
        self.bad_label, self.bad_batch = bad_label, bad_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(0)
        for i in range(5):
            y = torch.arange(4) % 4
            if i + 1 == self.bad_batch:
                y = torch.tensor([0, 1, self.bad_label, 2])
            yield torch.randn(4, 3, 8, 8, generator=g), y


def test_a_bad_label_in_the_3rd_batch_of_a_stream_is_named_and_rolled_back() -> None:
    loader = DataLoader(_Stream(bad_label=7), batch_size=None)
    _fails_unchanged(
        small_net(), ValueError, r"batch 3 .*label 7 is outside 0\.\.3", data=loader, steps=5
    )


def test_a_bad_label_without_num_classes_is_checked_against_the_head() -> None:
    loader = DataLoader(_Stream(bad_label=5), batch_size=None)
    model = small_net(out=4)
    before = model_fingerprint(model)
    with pytest.raises(ValueError, match=r"batch 3 .*label 5 is outside 0\.\.3"):
        finetune(model, loader, steps=5)
    assert model_fingerprint(model) == before


def test_diverging_lr_raises_and_restores_the_model() -> None:
    model = small_net()
    before = model_fingerprint(model)
    with pytest.raises(NonFiniteLossError, match="restored") as info:
        finetune(model, images(64), batch_size=4, num_classes=4, lr=1e6, epochs=3)
    assert model_fingerprint(model) == before
    assert info.value.report.steps >= 1  # it did train before diverging
    assert "restored" in info.value.report.summary()


class _Broken(Dataset[tuple[torch.Tensor, int]]):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == 10:
            raise OSError("disk read failed at item 10")
        return torch.full((3, 8, 8), float(i % 4)), i % 4


def test_a_dataset_failing_part_way_is_rolled_back() -> None:
    loader = DataLoader(_Broken(), batch_size=4)
    _fails_unchanged(small_net(), OSError, "item 10", data=loader)


def test_a_one_image_dataset_that_batchnorm_refuses_restores_the_head() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    data = TensorDataset(torch.randn(1, 12), torch.tensor([1]))
    _fails_unchanged(model, ValueError, "more than 1 value per channel", data=data, num_classes=3)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.arange(16) % 4 + 0.9, "fractional"),
        (nn.functional.one_hot(torch.arange(16) % 4, 4).float(), "argmax"),
        (torch.full((16, 4), 0.25), "argmax"),
    ],
    ids=["float", "one-hot", "soft"],
)
def test_float_and_soft_labels_are_refused_not_truncated(labels: torch.Tensor, match: str) -> None:
    data = TensorDataset(images().tensors[0], labels)
    _fails_unchanged(small_net(), ValueError, match, data=data, num_classes=None, part_way=False)
    _fails_unchanged(small_net(), ValueError, match, data=data, part_way=False)
    loader = DataLoader(data, batch_size=4)
    _fails_unchanged(small_net(), ValueError, match, data=loader, part_way=False)


def test_a_fractional_label_first_seen_in_the_3rd_batch_of_a_stream_is_rolled_back() -> None:
    loader = DataLoader(_Stream(bad_label=0.5), batch_size=None)
    _fails_unchanged(small_net(), ValueError, r"batch 3 .*fractional", data=loader, steps=5)


def test_whole_number_float_labels_train_as_those_classes() -> None:
    x, y = images().tensors
    report = finetune(small_net(), TensorDataset(x, y.float()), batch_size=4, num_classes=None)
    assert report.num_classes == 4 and report.steps == 4 and report.ok


def test_a_stop_is_not_a_failure_it_keeps_what_was_trained_and_says_so() -> None:
    model = small_net()
    head_before = model[8].weight.detach().clone()
    report = finetune(
        model, images(classes=3), batch_size=4, num_classes=3, callback=lambda e: e.step < 2
    )
    assert report.stopped_early and report.steps == 2
    assert not torch.equal(model[8].weight, head_before)
    assert "keeps what was trained" in report.summary()
    assert model[1].weight.requires_grad is False and report.ok
