"""Shared fixtures: tiny named models that exercise the traps, and torchvision resnet18."""

from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import torch
from torch import nn

# Tests never try to download weights; the loading code is exercised through a local hub cache.
os.environ.setdefault("FREEZE_WIDGETS_OFFLINE", "1")
torch.set_num_threads(2)


class Nested(nn.Module):
    """An OrderedDict-built model with a parameter owned by a parent that has children."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.body = nn.Sequential(
            OrderedDict(
                stem=nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), bn=nn.BatchNorm2d(4))),
                act=nn.ReLU(),
                block=nn.Sequential(OrderedDict(conv=nn.Conv2d(4, 4, 1), bn=nn.BatchNorm2d(4))),
            )
        )
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x) * self.scale.view(1, -1, 1, 1)
        return self.head(x.mean((2, 3)))


class Tied(nn.Module):
    """Embedding and decoder share one weight (counted once), and a module used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.shared = nn.Linear(6, 6)
        self.encoder = nn.Sequential(self.shared, nn.ReLU())
        self.decoder = nn.Linear(6, 10, bias=False)
        self.decoder.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.shared(self.encoder(self.embed(x))))


class RootParam(nn.Module):
    """A ViT-like root-level parameter next to children."""

    def __init__(self) -> None:
        super().__init__()
        self.class_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.proj = nn.Linear(8, 8)
        self.heads = nn.Sequential(nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.proj(x + self.class_token).mean(1))


def make_seq_bn() -> nn.Sequential:
    """Lightning's tiny test model."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))


@pytest.fixture
def seq_bn() -> nn.Sequential:
    return make_seq_bn()


@pytest.fixture
def nested() -> Nested:
    torch.manual_seed(0)
    return Nested()


@pytest.fixture
def tied() -> Tied:
    torch.manual_seed(0)
    return Tied()


@pytest.fixture
def root_param() -> RootParam:
    torch.manual_seed(0)
    return RootParam()


@pytest.fixture
def resnet18() -> nn.Module:
    from torchvision.models import resnet18 as build

    torch.manual_seed(0)
    return build(weights=None)


def independent_counts(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) computed directly, unique tensors by identity."""
    unique = {id(p): p for _, p in module.named_parameters(remove_duplicate=False)}
    total = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    return total, trainable


def requires_grad_map(model: nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters(remove_duplicate=False)}


def _tensor_fingerprint(t: torch.Tensor) -> object:
    """A tensor's bytes (so NaN equals itself); identity only where there are none to read."""
    from torch.nn.parameter import is_lazy

    if is_lazy(t) or t.device.type == "meta":
        return (type(t).__name__, id(t))
    return (
        t.dtype,
        tuple(t.shape),
        t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(),
    )


def model_fingerprint(model: nn.Module) -> dict[str, object]:
    """Everything a public call may change, to assert a failing call changed none of it.

    State tensors bitwise (as bytes, so NaN compares equal to itself), the requires_grad map,
    every module's type and training flag, by every name (shared modules included), and which
    BatchNorm layers have their ``train`` replaced by a policy.
    """
    state = {name: _tensor_fingerprint(t) for name, t in model.state_dict(keep_vars=True).items()}
    modules = model.named_modules(remove_duplicate=False)
    return {
        "state": state,
        "requires_grad": requires_grad_map(model),
        "types": {n: type(m).__name__ for n, m in modules},
        "training": {n: m.training for n, m in model.named_modules(remove_duplicate=False)},
        "train_overrides": {
            n: type(m.__dict__["train"]).__name__
            for n, m in model.named_modules(remove_duplicate=False)
            if "train" in m.__dict__
        },
        "identity": [id(m) for _, m in model.named_modules(remove_duplicate=False)],
    }


_BROWSER_STARTERS = ("launch_chromium", "lab_browser", "require_browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A safety net for the tiers: a test module that can start Chromium is browser and slow.

    ``-m "not browser"`` must leave out everything that starts a browser, even in a module
    that forgot its marker; such a module imports one of the harness's browser starters.
    """
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and any(hasattr(module, name) for name in _BROWSER_STARTERS):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
