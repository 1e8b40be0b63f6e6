"""Cheap exact snapshots of tensors that must not move, and per-tensor comparison rows.

Used by :class:`~freeze_widgets.verify.guard.FreezeGuard` after every optimizer step, and usable
by any training loop that wants a verification table (``path, kind, moved, max diff``).

Fingerprint choice (cheap enough to leave on, exact enough to trust): the tensor's raw bits are
viewed as integers of the same width (so ``-0.0`` vs ``0.0`` and NaN payloads count as changes),
split into blocks of 256 consecutive elements, and each block is reduced with ``torch.hash_tensor``
(a 64-bit XOR reduction); the whole tensor's integer sum (wrapping, in the elements' own
width) is kept as well. A
change to any single element flips at least one bit of its block's XOR, so it is always seen; so
is any change spread over several blocks. A change goes unseen only if, inside every block, the
XOR of all bit changes cancels *and* the integer sum is unchanged, e.g. two different values
swapped with each other inside one 256-element block. Optimizer updates,
weight decay, running-statistic updates and ordinary in-place writes cannot do that except by a
vanishing coincidence. The fingerprint costs 8 bytes per 256 elements.
Where ``torch.hash_tensor`` is missing (PyTorch before 2.9) a wrapping int64 sum weighted by
position replaces the block XOR; it is slower, and sees every change confined to one element.
``keep_copies=True`` keeps a full copy instead, for an exact max-abs-diff.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from freeze_widgets.freezing.bn import bn_is_frozen, iter_batchnorms
from freeze_widgets.freezing.bn import bn_state as _bn_state

__all__ = [
    "Fingerprint",
    "TensorCheck",
    "TensorSnapshot",
    "digest",
    "fingerprint",
    "local",
    "max_abs_diff",
]

_BLOCK = 256  # 64 made the full check 2x slower (hash_tensor's per-row cost) for little gain
_INT_OF_WIDTH = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_HAS_HASH = hasattr(torch, "hash_tensor")

Kind = Literal["param", "buffer"]
Scope = Literal["frozen", "all"]


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """Block hashes and integer sum of one tensor's bits (compare with :meth:`same_as`)."""

    blocks: torch.Tensor
    total: int

    def same_as(self, other: Fingerprint) -> bool:
        if self.total != other.total:
            return False
        # A fingerprint taken on an accelerator compares with one of a CPU copy (same bits).
        return torch.equal(self.blocks, other.blocks.to(self.blocks.device))


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of ``t``: the local shard of a ``DTensor`` (FSDP2), else ``t``."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t  # type: ignore[no-any-return]


def _as_integers(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as a flat integer tensor (same element width; complex splits in two)."""
    flat = local(t).detach().reshape(-1)
    if flat.dtype == torch.bool:
        return flat.view(torch.int8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    return flat.view(_INT_OF_WIDTH[flat.element_size()])


def _weighted_sum(ints: torch.Tensor) -> int:
    """Fallback block hash: sum of ``value * (position + 1)`` in wrapping int64, chunked."""
    chunk = 1 << 20
    weights = torch.arange(1, min(chunk, ints.numel()) + 1, dtype=torch.int64, device=ints.device)
    total = torch.zeros((), dtype=torch.int64, device=ints.device)
    for start in range(0, ints.numel(), chunk):
        part = ints[start : start + chunk].to(torch.int64)
        # sum((start + k) * x_k) == start * sum(x) + sum(k * x_k): one weight vector serves all.
        total += (part * weights[: part.numel()]).sum() + start * part.sum()
    return int(total)


def fingerprint(t: torch.Tensor) -> Fingerprint:
    """An exact-bits fingerprint of ``t`` (see the module docstring for what it guarantees)."""
    ints = _as_integers(t)
    # Summed in the elements' own width, wrapping: exact modular arithmetic, so the same bits
    # give the same total in any order, and 15x faster than widening int32 to int64 first.
    total = int(ints.sum(dtype=ints.dtype))
    if not _HAS_HASH:
        return Fingerprint(torch.tensor([_weighted_sum(ints)]), total)
    whole = ints.numel() // _BLOCK * _BLOCK
    parts = [torch.hash_tensor(ints[:whole].view(-1, _BLOCK), dim=1)] if whole else []
    if whole < ints.numel():
        parts.append(torch.hash_tensor(ints[whole:]).reshape(1))
    blocks = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint64)
    return Fingerprint(blocks, total)


def digest(t: torch.Tensor) -> str:
    """A short text digest of ``t``'s dtype, shape and fingerprint, to compare across processes.

    Built on :func:`fingerprint` (one hashing scheme): equal digests mean equal bits up to the
    fingerprint's guarantee, and only the block hashes (8 bytes per 256 elements) are hashed.
    """
    fp = fingerprint(t)
    h = hashlib.sha256(f"{t.dtype}{tuple(local(t).shape)}{fp.total}".encode())
    h.update(fp.blocks.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def max_abs_diff(before: torch.Tensor, after: torch.Tensor) -> float:
    """Largest absolute elementwise difference (integers compared exactly in double)."""
    before, after = local(before).detach(), local(after).detach().to(before.device)
    if before.shape != after.shape:
        return math.inf
    if before.numel() == 0:
        return 0.0
    if not before.is_floating_point():
        before, after = before.double(), after.double()
    return float((after - before).abs().max())


@dataclass(frozen=True)
class TensorCheck:
    """One watched tensor compared with its snapshot.

    Attributes:
        path: Its name in ``named_parameters()`` / ``named_buffers()``.
        kind: ``"param"`` or ``"buffer"`` (a BatchNorm running statistic).
        frozen: Whether it was frozen when the snapshot was taken (for a buffer: its
            BatchNorm was).
        moved: Whether any bit changed.
        max_abs_diff: How far it moved; ``nan`` when it moved but no copy was kept.
        module: The owning BatchNorm's path for buffers ("" for parameters).
        bn_policy: The BatchNorm's policy ("eval", "frozen", "train") for buffers, else "".
    """

    path: str
    kind: Kind
    frozen: bool
    moved: bool
    max_abs_diff: float
    module: str = ""
    bn_policy: str = ""


@dataclass
class _Entry:
    path: str
    kind: Kind
    tensor: torch.Tensor  # the live tensor (a reference, not a copy)
    frozen: bool
    module: str
    bn_policy: str
    print_: Fingerprint | None = None
    copy: torch.Tensor | None = None

    def take(self, keep_copy: bool) -> None:
        if self.tensor.is_meta:  # nothing to compare on the meta device
            return
        self.print_ = fingerprint(self.tensor)
        # Copies live on the CPU: accelerator memory is what a large model is short of.
        self.copy = local(self.tensor).detach().to("cpu", copy=True) if keep_copy else None

    def check(self, now: torch.Tensor | None = None) -> TensorCheck:
        """Compare with the reference: the live tensor, or ``now`` when given."""
        now = self.tensor if now is None else now
        moved = self.print_ is not None and not _same(now, self.print_, self.copy)
        if not moved:
            diff = 0.0
        elif self.copy is not None:
            diff = max_abs_diff(self.copy, now)
        else:
            diff = math.nan
        return TensorCheck(
            self.path, self.kind, self.frozen, moved, diff, self.module, self.bn_policy
        )


def _same(now: torch.Tensor, ref: Fingerprint, copy: torch.Tensor | None) -> bool:
    now = local(now)
    if copy is not None and (now.shape != copy.shape or now.dtype != copy.dtype):
        return False
    try:
        return fingerprint(now).same_as(ref)
    except (KeyError, RuntimeError):  # another element width or layout: not the same bits
        return False


def _bn_buffers(
    model: nn.Module, scope: Scope, allow_bn_stats: bool
) -> Iterator[tuple[str, torch.Tensor, bool, str, str]]:
    for module_path, bn in iter_batchnorms(model):
        frozen = bn_is_frozen(bn)
        policy = _bn_state(bn)
        if scope == "frozen" and (not frozen or (allow_bn_stats and policy == "train")):
            continue
        for name, buf in bn.named_buffers(prefix=module_path, recurse=False):
            if buf is not None:
                yield name, buf, frozen, module_path, policy


class TensorSnapshot:
    """Fingerprints (and optionally copies) of a model's watched tensors at one moment.

    Example:
        >>> snap = TensorSnapshot.take(model, keep_copies=True)
        >>> ...  # train
        >>> [row.path for row in snap.compare() if row.moved]
        []
    """

    def __init__(self, keep_copies: bool = False) -> None:
        self.keep_copies = keep_copies
        self.entries: dict[str, _Entry] = {}

    @classmethod
    def take(
        cls,
        model: nn.Module,
        *,
        scope: Scope = "frozen",
        keep_copies: bool = False,
        allow_bn_stats: bool = False,
    ) -> TensorSnapshot:
        """Snapshot ``model``'s frozen tensors (or, with ``scope="all"``, every parameter).

        Args:
            model: The model; nothing in it is changed.
            scope: ``"frozen"``: parameters with ``requires_grad=False`` and the running
                statistics of frozen BatchNorms. ``"all"``: every parameter and every
                BatchNorm buffer, each row saying whether it was frozen.
            keep_copies: Keep a full copy of each tensor for an exact max-abs-diff (costs
                the tensors' memory); without it a moved tensor's diff is ``nan``.
            allow_bn_stats: Leave out running statistics of frozen BatchNorms left in train
                mode on purpose (the ``bn="train"`` policy).
        """
        if scope not in ("frozen", "all"):
            raise ValueError(f'scope must be "frozen" or "all"; got {scope!r}')
        snap = cls(keep_copies)
        for path, p in model.named_parameters():  # de-duplicated: a tied tensor appears once
            if scope == "all" or not p.requires_grad:
                snap.watch(path, p, frozen=not p.requires_grad)
        for path, buf, frozen, module_path, policy in _bn_buffers(model, scope, allow_bn_stats):
            snap.watch(path, buf, kind="buffer", frozen=frozen, module=module_path,
                       bn_policy=policy)  # fmt: skip
        return snap

    def watch(
        self,
        path: str,
        tensor: torch.Tensor,
        *,
        kind: Kind = "param",
        frozen: bool = True,
        module: str = "",
        bn_policy: str = "",
    ) -> None:
        """Watch one more tensor from now on (its current value is the reference).

        Args:
            path: Its name in ``named_parameters()`` / ``named_buffers()``.
            tensor: The live tensor (held by reference; not copied unless ``keep_copies``).
            kind: ``"param"`` or ``"buffer"``.
            frozen: Whether it is meant to stay put.
            module: The owning BatchNorm's path, for buffers.
            bn_policy: That BatchNorm's policy, for buffers.
        """
        entry = _Entry(path, kind, tensor, frozen, module, bn_policy)
        entry.take(self.keep_copies)
        self.entries[path] = entry

    def tensor(self, path: str) -> torch.Tensor:
        """The live tensor watched under ``path``."""
        return self.entries[path].tensor

    def rebind(self, path: str, tensor: torch.Tensor) -> TensorCheck:
        """Point ``path`` at a new tensor object (a replaced ``nn.Parameter``).

        The reference stays the old value, so the returned row says whether the replacement
        holds different values; later checks read the new object.
        """
        entry = self.entries[path]
        entry.tensor = tensor
        return entry.check()

    def compare(self, paths: Iterable[str] | None = None) -> list[TensorCheck]:
        """One row per watched tensor (or per path in ``paths``), in snapshot order."""
        if paths is None:
            return [entry.check() for entry in self.entries.values()]
        return [self.entries[p].check() for p in paths if p in self.entries]

    def compare_with(self, tensors: Mapping[str, torch.Tensor]) -> list[TensorCheck]:
        """Rows against other tensors of the same names (e.g. a state dict after wrapping).

        Names missing from ``tensors`` are left out.
        """
        return [e.check(tensors[n]) for n, e in self.entries.items() if n in tensors]

    def moved(self, paths: Iterable[str] | None = None) -> list[TensorCheck]:
        """Only the rows of tensors that changed."""
        return [row for row in self.compare(paths) if row.moved]

    def rebase(self, paths: list[str]) -> None:
        """Take these tensors' current values as the new reference."""
        for path in paths:
            self.entries[path].take(self.keep_copies)

    def drop(self, path: str) -> None:
        self.entries.pop(path, None)

    def __len__(self) -> int:
        return len(self.entries)
