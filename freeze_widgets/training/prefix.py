"""The frozen prefix of a chain-like model: run it without gradients, cache its output.

When a model's forward is a plain chain of its top-level children (verified on a real batch),
the longest run of leading children with nothing trainable runs under ``torch.no_grad()`` and
keeps no activations. When that prefix is also deterministic (no BatchNorm or dropout in train
mode), its output for an epoch can be kept and later epochs train only the rest, on the cached
features reshuffled, as long as the cache stays under :data:`MAX_CACHE_BYTES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from freeze_widgets.freezing.modes import modes_restored

__all__ = ["MAX_CACHE_BYTES", "Chain", "FrozenPrefix", "find_chain"]

#: Cached prefix features above this size are not kept (the run silently falls back to the
#: full forward), so a large dataset cannot exhaust memory.
MAX_CACHE_BYTES = 1 << 30

_Features = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Chain:
    """A model's forward as a plain chain of its top-level children (names kept, modules are
    looked up on every use because the "frozen" BN policy and unfreezing swap module objects)."""

    names: list[str]
    flatten_before_linear: bool

    def modules(self, model: nn.Module) -> list[nn.Module]:
        """The children named in the chain, as they are in ``model`` now."""
        return [getattr(model, n) for n in self.names]

    def run(self, model: nn.Module, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Children ``start`` to ``stop`` (exclusive) applied to ``x`` in turn."""
        for mod in self.modules(model)[start:stop]:
            if self.flatten_before_linear and isinstance(mod, nn.Linear) and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = mod(x)
        return x

    def frozen_prefix(self, model: nn.Module) -> int:
        """Length of the longest run of leading children without a trainable parameter."""
        n = 0
        for mod in self.modules(model):
            if any(p.requires_grad for p in mod.parameters()):
                break
            n += 1
        return min(n, len(self.names) - 1)  # something must stay outside no_grad

    def prefix_deterministic(self, model: nn.Module, k: int) -> bool:
        """Whether the first ``k`` children give the same output for the same input every epoch."""
        for mod in self.modules(model)[:k]:
            for sub in mod.modules():
                if sub.training and isinstance(sub, (_BatchNorm, _DropoutNd)):
                    return False
        return True


def find_chain(model: nn.Module, x: torch.Tensor) -> Chain | None:
    """A verified chain split of ``model``, or None if its forward is not a plain chain.

    The check runs in eval mode (no BatchNorm statistics change, no dropout) under no_grad.
    """
    names = [n for n, _ in model.named_children()]
    if len(names) < 2 or any(True for _ in model.named_parameters(recurse=False)):
        return None
    x = x[:2]  # eval mode makes the result batch-independent; two samples are enough
    with modes_restored(model), torch.no_grad():
        model.eval()
        try:
            expected = model(x)
        except Exception:  # any failure means: no split, train normally
            return None
        if not isinstance(expected, torch.Tensor):
            return None
        for flatten in (False, True):
            chain = Chain(names, flatten)
            try:
                got = chain.run(model, x, 0, len(names))
            except Exception:  # this candidate does not fit the model
                continue
            if got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
                return chain
    return None


class FrozenPrefix:
    """Owns the chain split, the feature cache and its memory budget for one training run.

    Per epoch: :meth:`start_epoch`, then :meth:`batches` to iterate, :meth:`check` on the first
    real batch of the run, :meth:`forward` for every batch, and :meth:`end_epoch`.

    Attributes:
        chain: The verified split, or None (not checked yet, nothing frozen, not a chain).
        checked: Whether the split has been looked for.
        length: Children in the frozen prefix this epoch (0: the plain forward runs).
        cached: Whether this epoch trains on cached prefix features.
    """

    def __init__(self, *, seed: int, max_cache_bytes: int | None = None) -> None:
        self.chain: Chain | None = None
        self.checked = False
        self.length = 0
        self.cached = False
        self._shuffle = torch.Generator().manual_seed(seed)
        self._max_bytes = MAX_CACHE_BYTES if max_cache_bytes is None else max_cache_bytes
        self._cache: _Features | None = None
        self._cache_key: int | None = None  # the prefix length the cache was collected with
        self._collecting: _Features | None = None
        self._bytes = 0
        self._want = False

    @property
    def frozen_names(self) -> list[str]:
        """Names of the children in the frozen prefix."""
        return self.chain.names[: self.length] if self.chain is not None else []

    def start_epoch(self, model: nn.Module, *, may_cache: bool) -> bool:
        """Decide this epoch; True if it trains on the cached features.

        Args:
            model: The model, after this epoch's unfreezing (which can shorten the prefix).
            may_cache: Whether this epoch's prefix output may be collected for later epochs.
        """
        self.length = self.chain.frozen_prefix(model) if self.chain is not None else 0
        self.cached = (
            self._cache is not None
            and self._cache_key == self.length
            and self.chain is not None
            and self.chain.prefix_deterministic(model, self.length)
        )
        self._want = not self.cached and may_cache
        self._collecting = None
        if not self.cached:
            self._cache, self._bytes = None, 0
            if self.checked:
                self._plan_collecting(model)
        return self.cached

    def batches(self, loader: Iterable[Any]) -> Iterable[Any]:
        """This epoch's batches: the loader, or the cached features reshuffled."""
        if self.cached and self._cache is not None:
            return _rebatch(self._cache, self._shuffle)
        return loader

    def check(self, model: nn.Module, x: torch.Tensor) -> None:
        """Look for the chain split on the first real batch, if anything is frozen.

        Done once: unfreezing later only shortens the frozen prefix, it never changes the chain.
        """
        self.checked = True
        if any(not p.requires_grad for p in model.parameters()):
            self.chain = find_chain(model, x)
        self.length = self.chain.frozen_prefix(model) if self.chain is not None else 0
        self._plan_collecting(model)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The model's output for ``x`` (cached features in a cached epoch); collects features."""
        chain = self.chain
        if chain is None or (not self.cached and self.length == 0):
            out: torch.Tensor = model(x)
            return out
        if self.cached:
            return chain.run(model, x, self.length, len(chain.names))
        # The frozen prefix keeps no activations: nothing in it needs a gradient.
        with torch.no_grad():
            feats = chain.run(model, x, 0, self.length)
        if self._collecting is not None:
            self._collect(feats, y)
        return chain.run(model, feats, self.length, len(chain.names))

    def end_epoch(self, *, keep: bool) -> None:
        """Keep what this epoch collected as the cache if ``keep`` (a later epoch will run)."""
        if self._collecting is not None and keep:
            self._cache, self._cache_key = self._collecting, self.length
        self._collecting = None

    def _plan_collecting(self, model: nn.Module) -> None:
        chain, k = self.chain, self.length
        if self._want and chain is not None and k > 0 and chain.prefix_deterministic(model, k):
            self._collecting = []
        else:
            self._collecting = None

    def _collect(self, feats: torch.Tensor, y: torch.Tensor) -> None:
        assert self._collecting is not None
        self._collecting.append((feats.detach(), y))
        self._bytes += feats.numel() * feats.element_size()
        if self._bytes > self._max_bytes:
            self._collecting = None  # over budget: later epochs run the full forward


def _rebatch(cache: _Features, g: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The cached epoch reshuffled into batches of the original size."""
    feats = torch.cat([f for f, _ in cache])
    labels = torch.cat([y for _, y in cache])
    size = cache[0][0].shape[0]
    order = torch.randperm(feats.shape[0], generator=g).to(feats.device)
    for i in range(0, feats.shape[0], size):
        idx = order[i : i + size]
        yield feats[idx], labels[idx]
