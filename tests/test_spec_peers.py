"""A FreezeSpec read from a model a peer froze reproduces that freeze on a fresh copy."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.models import resnet18

from freeze_widgets import FreezeSpec
from freeze_widgets.freezing.bn import FrozenBatchNorm, bn_state


def _lightning_model() -> nn.Module:
    # The model of Lightning's own fine-tuning tests.
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))


def test_lightning_freeze_without_train_bn_reads_as_eval_and_reproduces() -> None:
    from lightning.pytorch.callbacks import BaseFinetuning

    model = _lightning_model()
    fresh = copy.deepcopy(model)
    BaseFinetuning.freeze(model[:2], train_bn=False)
    spec = FreezeSpec.from_model(model)
    assert spec.bn == "eval"  # statistics fixed, as Lightning's track_running_stats=False
    assert set(spec.frozen) == {"0", "1"}
    spec.apply(fresh)
    assert {n: p.requires_grad for n, p in fresh.named_parameters()} == {
        n: p.requires_grad for n, p in model.named_parameters()
    }
    # Neither model's BatchNorm statistics move in a train-mode forward.
    for m in (model, fresh):
        before = m[1].running_mean.clone()
        m.train()(torch.randn(8, 32) * 5 + 3)
        assert torch.equal(m[1].running_mean, before)


def test_timm_frozen_batchnorm_stem_is_kept_and_reproduced() -> None:
    from timm.utils import freeze

    torch.manual_seed(0)
    model = resnet18()
    fresh = copy.deepcopy(model)
    names = [n for n, _ in model.named_parameters()]
    freeze(model, ["conv1", "bn1", "layer1"])
    assert type(model.bn1).__name__ == "FrozenBatchNorm2d"  # weight and bias are buffers now
    spec = FreezeSpec.from_model(model)
    assert spec.bn == "frozen"
    assert set(spec.frozen) == {"conv1", "bn1", "layer1"}
    spec.apply(fresh)
    assert isinstance(fresh.bn1, FrozenBatchNorm) and bn_state(fresh.bn1) == "frozen"
    still = dict(model.named_parameters())
    timm_map = {n: still[n].requires_grad if n in still else False for n in names}
    ours = dict(fresh.named_parameters())
    assert {n: ours[n].requires_grad for n in names} == timm_map
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model.eval()(x), fresh.eval()(x), rtol=1e-4, atol=1e-5)


def test_timm_freeze_of_the_batchnorm_alone_is_not_lost() -> None:
    from timm.utils import freeze

    model = resnet18()
    freeze(model, ["bn1"])
    assert FreezeSpec.from_model(model).frozen == ("bn1",)
