"""FreezeSpec read strictly, from_model linear in depth, FrozenBatchNorm's state_dict plain
(issue 19, item 9)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from freeze_widgets import FreezeSpec, freeze, unfreeze
from freeze_widgets.freezing.bn import FrozenBatchNorm

from .conftest import model_fingerprint

GOOD = {"format": "freeze_widgets.FreezeSpec", "version": 1, "frozen": ["0"], "bn": "eval"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (json.dumps({**GOOD, "format": "other.thing"}), "format is 'other.thing'"),
        (json.dumps({**GOOD, "version": 99}), "version 99, written by a newer"),
        (json.dumps({**GOOD, "version": "1"}), "version must be a positive int"),
        (json.dumps({**GOOD, "version": True}), "version must be a positive int"),
        ('{"frozen": ["0"], "frozen": ["1"]}', 'the key "frozen" appears twice'),
        (json.dumps({**GOOD, "frozn": []}), "unknown key.*'frozn'"),
        ('{"frozen": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
    ids=["format", "version-99", "version-str", "version-bool", "duplicate", "unknown", "deep"],
)
def test_from_json_refuses_what_could_mean_two_things(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FreezeSpec.from_json(text)


def test_from_json_still_reads_its_own_output_and_hand_written_specs() -> None:
    spec = FreezeSpec(("0", "2.weight"), "frozen")
    assert FreezeSpec.from_json(spec.to_json()) == spec
    assert FreezeSpec.from_json('{"frozen": ["0"]}') == FreezeSpec(("0",), "eval")


def test_bn_frozen_keeps_num_batches_tracked_so_plain_checkpoints_load_strictly() -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    plain = resnet18()
    model = resnet18()
    freeze(model, "layer1", bn="frozen")
    assert isinstance(model.layer1[0].bn1, FrozenBatchNorm)
    assert list(model.state_dict()) == list(plain.state_dict())
    model.load_state_dict(plain.state_dict(), strict=True)  # raised "Unexpected key(s)" before
    resnet18().load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    tracked = model.layer1[0].bn1.num_batches_tracked.clone()
    model.train()(x)  # a frozen layer's counter does not move either
    assert torch.equal(model.layer1[0].bn1.num_batches_tracked, tracked)
    unfreeze(model)
    assert model.layer1[0].bn1.num_batches_tracked is not None


def _chain(depth: int) -> tuple[nn.Module, list[str]]:
    """``depth`` nested Sequentials, each holding a Linear; all frozen but the deepest."""
    inner: nn.Module = nn.Linear(2, 2)
    for _ in range(depth):
        inner = nn.Sequential(nn.Linear(2, 2), inner)
    freeze(inner)
    path = ".".join(["1"] * depth)
    unfreeze(inner, path)
    expected = [".".join(["1"] * k + ["0"]) for k in range(depth)]
    return inner, expected


def test_from_model_is_linear_in_depth() -> None:
    model, expected = _chain(600)
    before = model_fingerprint(model)
    # Correctness at a depth a recursive walk could not reach (the speed is benchmarked, not
    # tested: the tests check results, never wall-clock time).
    spec = FreezeSpec.from_model(model)
    assert list(spec.frozen) == expected
    assert model_fingerprint(model) == before
