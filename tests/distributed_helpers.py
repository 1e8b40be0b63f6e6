"""Importable helpers for the distributed tests (worker processes unpickle these by name)."""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn
from torch.utils.data import Dataset


def tiny_net(seed: int = 0) -> nn.Sequential:
    """conv-bn-relu twice, pooled, a linear head: top-level groups "0", "1", "3", "4", "8"."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


class Misbehaving(Dataset[tuple[torch.Tensor, int]]):
    """16x16 noise images that fail in worker rank ``rank`` ("raise", "kill" itself) or hang
    in every worker ("hang")."""

    classes = ("a", "b", "c", "d")

    def __init__(self, how: str, rank: int = 1, n: int = 64) -> None:
        self.how, self.rank, self.n = how, rank, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rank = os.environ.get("RANK")  # only in worker processes, never in the caller
        if rank is not None and (self.how == "hang" or int(rank) == self.rank):
            if self.how == "raise":
                raise ValueError(f"corrupt sample {index} (raised on purpose)")
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "hang":
                time.sleep(3600)
        g = torch.Generator().manual_seed(index)
        return torch.randn(3, 16, 16, generator=g), index % 4


class Slow(Dataset[tuple[torch.Tensor, int]]):
    """16x16 noise images in 4 classes that take ``delay`` seconds each in worker processes,
    so a run lasts long enough to be stopped part-way."""

    classes = ("a", "b", "c", "d")

    def __init__(self, n: int = 2048, delay: float = 0.01) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if os.environ.get("RANK") is not None:
            time.sleep(self.delay)
        g = torch.Generator().manual_seed(index)
        return torch.randn(3, 16, 16, generator=g), index % 4
