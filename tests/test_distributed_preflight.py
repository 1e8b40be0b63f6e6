"""check_distributed: each finding on a model built to trigger it, none on clean models."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    checkpoint_wrapper,
)
from torch.utils.checkpoint import checkpoint
from torchvision.models import resnet18

from freeze_widgets import freeze, unfreeze
from freeze_widgets.distributed import check_distributed


def _kinds(findings: list) -> list[tuple[str, str]]:
    return [(f.kind, f.path) for f in findings]


def _small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "fsdp1"])
def test_clean_resnet18_head_only_has_no_finding(strategy: str) -> None:
    m = resnet18(num_classes=4)
    freeze(m)
    unfreeze(m, "fc")
    assert check_distributed(m, strategy) == []


def test_fully_trainable_resnet18_has_no_finding() -> None:
    assert check_distributed(resnet18(num_classes=4), "ddp") == []


def test_check_leaves_the_model_bitwise_unchanged() -> None:
    m = _small_cnn().train()
    freeze(m, "0")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    modes = [mod.training for mod in m.modules()]
    check_distributed(m, "ddp", sync_batchnorm=True)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [mod.training for mod in m.modules()] == modes
    assert all(p.grad is None for p in m.parameters())


class _WithUnusedBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 4)
        self.aux = nn.Linear(8, 4)  # trainable, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_unused_trainable_is_named_and_fixed_by_freezing_it() -> None:
    m = _WithUnusedBranch()
    x = torch.randn(2, 8)
    found = check_distributed(m, "ddp", example_inputs=x)
    assert _kinds(found) == [("unused_trainable", "aux")]
    assert "weight" in found[0].message and "freeze" in found[0].fix.lower()
    freeze(m, "aux")
    assert check_distributed(m, "ddp", example_inputs=x) == []
    # FSDP2 does not need every trainable parameter to get a gradient.
    unfreeze(m, "aux")
    assert check_distributed(m, "fsdp", example_inputs=x) == []


class _TokenModel(nn.Module):
    """Token ids in: no default input can be guessed for an Embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.aux = nn.Linear(8, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids)


def test_unused_check_without_inputs_says_it_was_skipped() -> None:
    found = check_distributed(_TokenModel(), "ddp")
    assert _kinds(found) == [("unused_check_skipped", "")]


def test_unused_check_guesses_a_feature_vector_for_a_linear_model() -> None:
    # The default input rule (base.modules.default_input_shape): (2, in_features).
    found = check_distributed(_WithUnusedBranch(), "ddp")
    assert _kinds(found) == [("unused_trainable", "aux")]


def test_fsdp1_mixed_unit_names_the_child() -> None:
    m = _small_cnn()
    freeze(m, "0.weight")  # conv bias stays trainable: one unit, mixed
    found = check_distributed(m, "fsdp1")
    assert _kinds(found) == [("fsdp1_mixed_unit", "0")]
    assert "fully_shard" in found[0].fix
    assert check_distributed(m, "fsdp") == []


def test_sync_batchnorm_conversion_of_eval_policy_bn_is_found() -> None:
    m = _small_cnn()
    freeze(m, "0", "1", bn="eval")
    found = check_distributed(m, "ddp", sync_batchnorm=True)
    assert _kinds(found) == [("syncbn_unfreezes", "1")]
    # The finding is real: the converted layer trains again after model.train().
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(m).train()
    assert converted[1].training
    # ... and the way out works: FrozenBatchNorm is not converted.
    m2 = _small_cnn()
    freeze(m2, "0", "1", bn="frozen")
    assert check_distributed(m2, "ddp", sync_batchnorm=True) == []


def test_frozen_syncbatchnorm_that_trains_is_found_without_the_flag() -> None:
    m = _small_cnn()
    freeze(m, "0", "1")
    m = nn.SyncBatchNorm.convert_sync_batchnorm(m)
    assert _kinds(check_distributed(m, "ddp")) == [("syncbn_unfreezes", "1")]


def _checkpointed(impl: CheckpointImpl) -> nn.Sequential:
    m = nn.Sequential(
        nn.Linear(8, 8),
        checkpoint_wrapper(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), checkpoint_impl=impl),
        nn.Linear(8, 2),
    )
    freeze(m, "0")
    return m


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
def test_reentrant_checkpoint_behind_frozen_prefix_is_found() -> None:
    x = torch.randn(2, 8)
    found = check_distributed(_checkpointed(CheckpointImpl.REENTRANT), "ddp", example_inputs=x)
    kinds = _kinds(found)
    assert ("reentrant_checkpoint", "1") in kinds
    # The trap is real: the forward/backward check sees the layer inside get no gradient.
    assert ("unused_trainable", "1._checkpoint_wrapped_module.0") in kinds
    fixed = check_distributed(_checkpointed(CheckpointImpl.NO_REENTRANT), "ddp", example_inputs=x)
    assert fixed == []


class _HFStyleLayer(nn.Module):
    """A transformers-style layer: ``gradient_checkpointing`` + ``_gradient_checkpointing_func``."""

    def __init__(self, use_reentrant: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.gradient_checkpointing = True
        self._gradient_checkpointing_func = functools.partial(
            checkpoint, use_reentrant=use_reentrant
        )


def test_transformers_style_flag_is_read() -> None:
    for reentrant, expected in ((True, [("reentrant_checkpoint", "1")]), (False, [])):
        m = nn.Sequential(nn.Embedding(10, 8), _HFStyleLayer(reentrant))
        freeze(m, "0")
        assert _kinds(check_distributed(m, "fsdp")) == expected


def test_model_already_wrapped_in_ddp_is_reported() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = dist.FileStore(str(Path(tmp) / "store"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        try:
            m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
            wrapped = nn.parallel.DistributedDataParallel(m)
            found = check_distributed(wrapped, "ddp", example_inputs=torch.randn(2, 4))
        finally:
            dist.destroy_process_group()
    assert _kinds(found) == [("wrapped_before_freeze", "")]
    assert "learning rate 0" in found[0].fix


def test_bad_arguments_raise_naming_them() -> None:
    with pytest.raises(TypeError, match="model"):
        check_distributed(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strategy"):
        check_distributed(nn.Linear(2, 2), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fsdp1"):
        check_distributed(nn.Linear(2, 2), "zero3")
