"""check_distributed answers with findings, never PyTorch's raw errors (issue 19, item 6)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from freeze_widgets import check_distributed, freeze, unfreeze

from .conftest import model_fingerprint


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x * mask).mean((2, 3)))


class Locked(nn.Sequential):
    """A module holding a lock: copy.deepcopy cannot copy it."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(4, 4), nn.Linear(4, 2))
        self.lock = threading.Lock()


def _kinds(model: nn.Module, **kw: object) -> list[tuple[str, str]]:
    before = model_fingerprint(model)
    findings = check_distributed(model, **kw)  # type: ignore[arg-type]
    assert model_fingerprint(model) == before
    return [(f.kind, f.message + " " + f.fix) for f in findings]


def test_nothing_trainable_is_a_finding_as_ddp_itself_refuses(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    freeze(model)
    [(kind, text)] = _kinds(model, example_inputs=torch.randn(2, 4))
    assert kind == "nothing_trainable" and "DistributedDataParallel" in text
    store = dist.FileStore(str(tmp_path / "store"), 1)  # the oracle: DDP's own refusal
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="requires a gradient"):
            nn.parallel.DistributedDataParallel(model)
    finally:
        dist.destroy_process_group()


def test_a_forward_needing_more_than_the_default_batch_is_a_skipped_check() -> None:
    [(kind, text)] = _kinds(Masked())
    assert kind == "unused_check_skipped"
    assert "mask" in text and "a default batch (2, 3, 32, 32)" in text and "example_inputs=" in text


def test_wrong_shape_example_inputs_are_named() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    [(kind, text)] = _kinds(model, example_inputs=torch.randn(2, 5))
    assert kind == "unused_check_skipped" and "example_inputs (2, 5)" in text


def test_a_model_that_cannot_be_copied_is_a_skipped_check() -> None:
    model = Locked()
    findings = _kinds(model, example_inputs=torch.randn(2, 4))
    assert [k for k, _ in findings] == ["unused_check_skipped"]
    assert "deepcopy" in findings[0][1]
    freeze(model, "0")
    kinds = _kinds(model, example_inputs=torch.randn(2, 4), sync_batchnorm=True)
    assert [k for k, _ in kinds] == ["unused_check_skipped", "syncbn_check_skipped"]


def test_syncbatchnorm_on_cpu_inside_a_process_group_is_checked(tmp_path: Path) -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.Conv2d(4, 4, 1), nn.AdaptiveAvgPool2d(1)
    )
    freeze(model, "0")  # the SyncBatchNorm trains, so it would sync
    x = torch.randn(2, 3, 8, 8)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="expected input tensor to be on GPU"):
            model.train()(x)  # what PyTorch does with it on CPU
        assert _kinds(model.eval(), example_inputs=x) == []
    finally:
        dist.destroy_process_group()


def test_a_batch_of_one_with_batchnorm1d_asks_for_two_items() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    freeze(model, "0")
    [(kind, text)] = _kinds(model, example_inputs=torch.randn(1, 4))
    assert kind == "unused_check_skipped" and "at least 2 items" in text
    unfreeze(model)
    assert _kinds(model, example_inputs=torch.randn(2, 4)) == []
