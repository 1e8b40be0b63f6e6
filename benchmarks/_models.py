"""Models shared by the benchmarks: torchvision on the meta device and a synthetic wide tree."""

from __future__ import annotations

from torch import nn

from freeze_widgets import load_model

TORCHVISION = ("resnet18", "resnet50", "resnet152", "efficientnet_b7")


def synthetic(branching: tuple[int, ...] = (10, 10, 50), width: int = 4) -> nn.Module:
    """A tree of Sequentials with Linear leaves: (10, 10, 50) gives 5,111 modules."""
    if not branching:
        return nn.Linear(width, width, device="meta")
    return nn.Sequential(*(synthetic(branching[1:], width) for _ in range(branching[0])))


def benchmark_models() -> list[tuple[str, nn.Module]]:
    out = [(name, load_model(name, device="meta")) for name in TORCHVISION]
    out.append(("synthetic-5k", synthetic()))
    out.append(("synthetic-deep", synthetic((2,) * 12)))
    return out
