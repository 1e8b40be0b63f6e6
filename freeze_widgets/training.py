"""A small, verified fine-tune loop: train what is trainable, prove the frozen part did not move.

:func:`finetune` trains a (partly frozen) classifier for a few epochs on offline synthetic images
(:func:`synthetic_dataset`), a Dataset, a DataLoader or an ImageFolder directory, and returns a
:class:`FineTuneReport` whose ``verification`` compares every parameter and every BatchNorm
buffer bitwise with a snapshot taken before training.

What it gets right (see DESIGN.md section 4):

* the optimizer only sees trainable parameters, and frozen parameters lose any stale ``.grad``
  first (a stale gradient with momentum or weight decay still moves a "frozen" weight);
* frozen BatchNorm layers keep the policy set by :mod:`freeze_widgets.freezing` across
  ``model.train()``; with ``bn=...`` the policy is re-applied through :func:`freeze`;
* gradually unfrozen groups join the running optimizer through ``add_param_group``;
* the longest frozen prefix of a chain-like model runs under ``torch.no_grad()``, and when it is
  deterministic its output can be cached after the first epoch so later epochs only run the rest.

The module is widget-free: the Jupyter panel lives in ``freeze_widgets.ui.finetune_panel``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .freezing import (
    BN_POLICIES,
    FrozenBatchNorm,
    bn_is_frozen,
    bn_state,
    iter_batchnorms,
    set_bn_policy,
    top_level_groups,
    unfreeze,
)

__all__ = [
    "ULMFIT_LR_FACTOR",
    "FineTuneReport",
    "NonFiniteLossError",
    "StepEvent",
    "SyntheticShapes",
    "UnfreezeEvent",
    "VerificationRow",
    "find_head",
    "finetune",
    "synthetic_dataset",
]

#: Each gradually unfrozen group trains at ``lr / ULMFIT_LR_FACTOR**k`` (k = 1, 2, ...), the
#: discriminative factor of ULMFiT (Howard & Ruder, 2018): layers further from the head get
#: smaller steps.
ULMFIT_LR_FACTOR = 2.6

#: Cached prefix features above this size are not kept (the run silently falls back to the
#: full forward), so a large dataset cannot exhaust memory.
MAX_CACHE_BYTES = 1 << 30

DEFAULT_IMAGE_SIZE = 32
DEFAULT_SYNTHETIC_N = 512
DEFAULT_SYNTHETIC_CLASSES = 4


# --------------------------------------------------------------------------- synthetic data

_PATTERNS = (
    "horizontal stripes",
    "vertical stripes",
    "diagonal stripes /",
    "diagonal stripes \\",
    "disc",
    "square",
    "checkerboard",
    "ring",
)
_MAX_SYNTHETIC_CLASSES = 2 * len(_PATTERNS)


class SyntheticShapes(Dataset[tuple[torch.Tensor, int]]):
    """Procedurally drawn image classes, generated once in memory.

    Attributes:
        images: ``(n, 3, size, size)`` float tensor, roughly zero-centred.
        targets: ``(n,)`` int64 labels, balanced over the classes.
        classes: One readable name per class.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> None:
        self.images = images
        self.targets = targets
        self.classes = classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def __repr__(self) -> str:
        size = self.images.shape[-1]
        return f"SyntheticShapes(n={len(self)}, classes={self.num_classes}, {size}x{size})"


def _draw(pattern: int, size: int, g: torch.Generator) -> torch.Tensor:
    """One ``(size, size)`` mask in [0, 1] for a pattern, with random frequency / phase / place."""
    r = torch.rand(6, generator=g)
    coords = torch.arange(size, dtype=torch.float32) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    freq = 3.0 + 3.0 * float(r[0])  # stripes per image
    phase = 2 * math.pi * float(r[1])
    cy, cx = 0.3 + 0.4 * float(r[2]), 0.3 + 0.4 * float(r[3])
    radius = 0.15 + 0.12 * float(r[4])
    if pattern == 0:
        return (torch.sin(2 * math.pi * freq * yy + phase) > 0).float()
    if pattern == 1:
        return (torch.sin(2 * math.pi * freq * xx + phase) > 0).float()
    if pattern == 2:
        return (torch.sin(2 * math.pi * freq * (xx + yy) / 1.41 + phase) > 0).float()
    if pattern == 3:
        return (torch.sin(2 * math.pi * freq * (xx - yy) / 1.41 + phase) > 0).float()
    dist = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    if pattern == 4:
        return (dist < radius).float()
    if pattern == 5:
        return (((yy - cy).abs() < radius) & ((xx - cx).abs() < radius)).float()
    if pattern == 6:
        cells = 2.0 + 2.0 * float(r[5])
        return ((torch.floor(yy * cells * 2) + torch.floor(xx * cells * 2)) % 2).float()
    return ((dist < radius + 0.08) & (dist > radius - 0.04)).float()


def synthetic_dataset(
    n: int = DEFAULT_SYNTHETIC_N,
    num_classes: int = DEFAULT_SYNTHETIC_CLASSES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
) -> SyntheticShapes:
    """An offline image-classification set a small CNN learns in seconds.

    Class ``k`` is pattern ``k % 8`` (stripes in four orientations, disc, square, checkerboard,
    ring) drawn with a random frequency, phase and position; classes 8-15 use a warm colour
    palette instead of a cool one. Foreground and background colours are random and Gaussian
    noise is added, so colour alone never identifies a class among the first eight. The same
    arguments always give the same tensors.

    Args:
        n: Number of images.
        num_classes: 2..16.
        image_size: Side length in pixels (at least 8).
        seed: Seed for everything random.

    Example:
        >>> ds = synthetic_dataset(n=8, num_classes=2, image_size=16)
        >>> ds[0][0].shape, len(ds)
        (torch.Size([3, 16, 16]), 8)
    """
    if not 2 <= num_classes <= _MAX_SYNTHETIC_CLASSES:
        raise ValueError(f"num_classes must be 2..{_MAX_SYNTHETIC_CLASSES}, got {num_classes}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)
    targets = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    images = torch.empty(n, 3, image_size, image_size)
    for i in range(n):
        label = int(targets[i])
        mask = _draw(label % len(_PATTERNS), image_size, g)
        colours = torch.rand(2, 3, generator=g)
        if label >= len(_PATTERNS):  # warm palette: more red than blue
            colours[:, 0] = 0.6 + 0.4 * colours[:, 0]
            colours[:, 2] = 0.4 * colours[:, 2]
        elif num_classes > len(_PATTERNS):  # cool palette, only needed to tell the halves apart
            colours[:, 2] = 0.6 + 0.4 * colours[:, 2]
            colours[:, 0] = 0.4 * colours[:, 0]
        # Keep foreground and background apart so the pattern is always visible.
        colours[1] = (colours[0] + 0.35 + 0.3 * colours[1]) % 1.0
        fg, bg = colours[0].view(3, 1, 1), colours[1].view(3, 1, 1)
        img = bg + (fg - bg) * mask
        img = img + 0.08 * torch.randn(img.shape, generator=g)
        images[i] = (img - 0.5) / 0.3
    names = [
        _PATTERNS[k % len(_PATTERNS)]
        + (" (warm)" if k >= len(_PATTERNS) else " (cool)" if num_classes > len(_PATTERNS) else "")
        for k in range(num_classes)
    ]
    return SyntheticShapes(images, targets.long(), names)


# --------------------------------------------------------------------------- report types


@dataclass(frozen=True)
class StepEvent:
    """Passed to ``callback`` after every optimizer step."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    acc: float
    elapsed: float
    eta_seconds: float
    param_groups: int = 1


@dataclass(frozen=True)
class UnfreezeEvent:
    """One group unfrozen by the schedule at the start of ``epoch`` (1-based)."""

    epoch: int
    group: str
    lr: float
    tensors: int


@dataclass(frozen=True)
class VerificationRow:
    """One parameter or BatchNorm buffer compared bitwise with its pre-training snapshot.

    ``status`` is ``"ok"``, ``"MOVED"`` (frozen but changed), ``"no gradient path"`` (trainable
    but unchanged) or ``"updated"`` (statistics of a frozen BatchNorm under the "train" policy,
    which is expected to change).
    """

    name: str
    kind: str
    was_frozen: bool
    changed: bool
    max_abs_change: float
    status: str
    note: str = ""


@dataclass
class FineTuneReport:
    """What :func:`finetune` did, with a bitwise verification of every parameter and BN buffer."""

    step_loss: list[float] = field(default_factory=list)
    step_acc: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    epoch_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    steps: int = 0
    total_steps: int = 0
    epochs: int = 0
    samples: int = 0
    total_seconds: float = 0.0
    samples_per_second: float = 0.0
    stopped_early: bool = False
    stop_reason: str | None = None
    head_replaced: str | None = None
    num_classes: int | None = None
    bn_policy: str = "none"
    optimizer: str = ""
    lr: float = 0.0
    unfreeze_events: list[UnfreezeEvent] = field(default_factory=list)
    frozen_prefix: list[str] = field(default_factory=list)
    cached_epochs: list[int] = field(default_factory=list)
    verification: list[VerificationRow] = field(default_factory=list)
    error: str | None = None

    # ------------------------------------------------------------------ derived

    @property
    def ok(self) -> bool:
        """No frozen parameter moved and no frozen "eval"/"frozen" BatchNorm statistic changed."""
        return not any(row.status == "MOVED" for row in self.verification)

    @property
    def final_loss(self) -> float | None:
        return self.step_loss[-1] if self.step_loss else None

    @property
    def final_acc(self) -> float | None:
        return self.epoch_acc[-1] if self.epoch_acc else None

    @property
    def moved(self) -> list[VerificationRow]:
        return [row for row in self.verification if row.status == "MOVED"]

    @property
    def no_gradient_path(self) -> list[VerificationRow]:
        return [row for row in self.verification if row.status == "no gradient path"]

    def rows(self, kind: str, *, frozen: bool) -> list[VerificationRow]:
        return [r for r in self.verification if r.kind == kind and r.was_frozen == frozen]

    def verification_lines(self) -> list[str]:
        """The verification part of :meth:`summary`, one statement per line."""
        frozen_p = self.rows("parameter", frozen=True)
        trainable_p = self.rows("parameter", frozen=False)
        moved_p = [r for r in frozen_p if r.status == "MOVED"]
        lines = []
        if moved_p:
            names = ", ".join(r.name for r in moved_p[:5]) + (" ..." if len(moved_p) > 5 else "")
            lines.append(
                f"{len(moved_p)} of {len(frozen_p)} frozen parameter tensors MOVED: {names}"
            )
        elif frozen_p:
            lines.append(f"all {len(frozen_p)} frozen parameter tensors bitwise unchanged")
        else:
            lines.append("no frozen parameters")
        changed_t = sum(1 for r in trainable_p if r.changed)
        text = f"{changed_t} trainable changed"
        if changed_t < len(trainable_p):
            text += f", {len(trainable_p) - changed_t} trainable unchanged (no gradient path)"
        lines[-1] += f"; {text}"
        frozen_b = self.rows("buffer", frozen=True)
        if not frozen_b:
            lines.append("no frozen BatchNorm layers")
        else:
            policies = sorted({r.note for r in frozen_b})
            pol = ", ".join(repr(p) for p in policies)
            moved_b = [r for r in frozen_b if r.status == "MOVED"]
            updated_b = [r for r in frozen_b if r.status == "updated" and r.changed]
            if moved_b:
                lines.append(
                    f"frozen BatchNorm statistics MOVED in {len(moved_b)} buffers "
                    f"(policy {pol}): {', '.join(r.name for r in moved_b[:3])}"
                )
            elif updated_b:
                lines.append(
                    f"frozen BatchNorm statistics CHANGED (policy {pol}: running statistics "
                    "keep updating)"
                )
            else:
                lines.append(f"frozen BatchNorm statistics unchanged (policy {pol})")
        return lines

    def summary(self) -> str:
        """A few lines: what ran, what was replaced or unfrozen, and the verification verdict."""
        epochs = f"{self.epochs} epoch" + ("" if self.epochs == 1 else "s")
        lines = [
            f"trained {self.steps} steps ({epochs}) in {self.total_seconds:.1f} s, "
            f"{self.samples_per_second:.0f} samples/s"
        ]
        if self.final_loss is not None:
            acc = f", accuracy {self.final_acc:.1%}" if self.final_acc is not None else ""
            lines[0] += f"; final loss {self.final_loss:.4g}{acc}"
        if self.stopped_early:
            lines.append(f"stopped early: {self.stop_reason}")
        if self.head_replaced:
            lines.append(f"head {self.head_replaced}")
        lines += [
            f"epoch {e.epoch}: unfroze {e.group} at lr {e.lr:.3g}" for e in self.unfreeze_events
        ]
        lines += self.verification_lines()
        lines.append("OK: frozen weights did not move" if self.ok else "FAILED: see MOVED rows")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class NonFiniteLossError(FloatingPointError, ValueError):
    """The loss became NaN or infinite; ``report`` holds what happened up to that step."""

    def __init__(self, message: str, report: FineTuneReport) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- data


def _labels_of(dataset: Any) -> torch.Tensor | None:
    """All labels of a map-style dataset if cheaply available (or small enough to read)."""
    for attr in ("targets", "labels"):
        value = getattr(dataset, attr, None)
        if value is not None:
            try:
                return torch.as_tensor(value).long()
            except (TypeError, ValueError):
                pass
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[-1].long()
    try:
        n = len(dataset)
    except TypeError:
        return None
    if n > 10_000:
        return None
    try:
        return torch.as_tensor([int(dataset[i][1]) for i in range(n)])
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def infer_num_classes(dataset: Any) -> int | None:
    """Number of classes from ``classes`` / ``num_classes`` / the labels; None if unknown."""
    classes = getattr(dataset, "classes", None)
    if classes is not None and not callable(classes):
        return len(classes)
    num = getattr(dataset, "num_classes", None)
    if isinstance(num, int):
        return num
    labels = _labels_of(dataset)
    if labels is None or labels.numel() == 0:
        return None
    return int(labels.max()) + 1


def _image_folder(path: Path, image_size: int) -> Dataset[Any]:
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.3, 0.3, 0.3)),
        ]
    )
    try:
        folder: Dataset[Any] = datasets.ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise ValueError(
            f"{path} is not an ImageFolder directory (one sub-folder per class holding "
            f"images): {exc}"
        ) from None
    return folder


def _make_loader(
    data: Any, *, batch_size: int, image_size: int, seed: int
) -> tuple[DataLoader[Any], Any]:
    """A DataLoader for ``data`` and the dataset behind it."""
    if data is None:
        data = synthetic_dataset(image_size=image_size, seed=seed)
    if isinstance(data, (str, Path)):
        path = Path(data).expanduser()
        if not path.is_dir():
            raise ValueError(f"data={str(data)!r} is not a directory (expected ImageFolder layout)")
        data = _image_folder(path, image_size)
    if isinstance(data, DataLoader):
        return data, data.dataset
    if isinstance(data, Dataset):
        loader: DataLoader[Any] = DataLoader(
            data,
            batch_size=batch_size,
            shuffle=hasattr(data, "__len__"),
            generator=torch.Generator().manual_seed(seed),
        )
        return loader, data
    raise TypeError(
        f"data must be None (synthetic images), a torch Dataset, a DataLoader or an ImageFolder "
        f"directory path; got {type(data).__name__}"
    )


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        for xk, yk in (("image", "label"), ("input", "target"), ("x", "y")):
            if xk in batch and yk in batch:
                return batch[xk], torch.as_tensor(batch[yk])
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], torch.as_tensor(batch[1])
    raise TypeError(
        "each batch must be (inputs, labels) (a tuple/list) or a dict with image/label keys; "
        f"got {type(batch).__name__}"
    )


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Label-preserving augmentation: random shift (reflect-padded) and brightness jitter.

    No flips or rotations: the synthetic classes are defined by orientation.
    """
    if x.dim() != 4:
        return x
    pad = max(1, x.shape[-1] // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
    out = padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    jitter = 1.0 + 0.2 * (torch.rand(x.shape[0], 1, 1, 1, generator=g) - 0.5)
    return out * jitter.to(out.device, out.dtype)


# --------------------------------------------------------------------------- head


def find_head(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The classification head: ``fc``, the last Linear in ``classifier``/``head(s)``, or the
    last ``nn.Linear`` anywhere in the model. None if the model has no Linear layer."""
    for attr in ("fc", "classifier", "head", "heads"):
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Linear):
            return attr, mod
        if isinstance(mod, nn.Module):
            linears = [(n, m) for n, m in mod.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                name, lin = linears[-1]
                return f"{attr}.{name}", lin
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _replace_head(model: nn.Module, num_classes: int, seed: int) -> str | None:
    found = find_head(model)
    if found is None:
        raise ValueError(
            f"num_classes={num_classes} but the model has no nn.Linear head to replace; "
            "give a model whose output already has that many classes"
        )
    path, old = found
    if old.out_features == num_classes:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    new.train(old.training)
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)
    return (
        f"{path}: Linear({old.in_features}->{old.out_features}) replaced by "
        f"Linear({new.in_features}->{num_classes})"
    )


# --------------------------------------------------------------------------- optimizer


_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], float], torch.optim.Optimizer]] = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}


def _make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return _OPTIMIZERS[name.lower()](params, lr)


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- chain split


@dataclass
class _Chain:
    """A model's forward as a plain chain of its top-level children (names kept, modules are
    looked up on every use because the "frozen" BN policy and unfreezing swap module objects)."""

    names: list[str]
    flatten_before_linear: bool

    def modules(self, model: nn.Module) -> list[nn.Module]:
        return [getattr(model, n) for n in self.names]

    def run(self, model: nn.Module, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
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


def _module_modes(model: nn.Module) -> dict[nn.Module, bool]:
    return {m: m.training for m in model.modules()}


def _restore_modes(modes: dict[nn.Module, bool], model: nn.Module) -> None:
    """Put every module back in the mode it had (flags set directly: ``.train()`` recurses).

    Modules added meanwhile (a new head, a FrozenBatchNorm) take their parent's mode, and a
    BatchNorm under the "eval"/"frozen" policy stays in eval whatever it was before, and one
    released during the run follows its parent.
    """
    restored: dict[str, bool] = {}
    for path, mod in model.named_modules():
        parent = restored.get(path.rpartition(".")[0], modes.get(model, True))
        mode = modes.get(mod, parent)
        if isinstance(mod, (_BatchNorm, FrozenBatchNorm)):
            # A policy decides: frozen ones stay in eval, released ones (gradual unfreezing)
            # follow their parent instead of the eval mode they had while frozen.
            mode = parent if bn_state(mod) == "train" else False
        mod.training = mode
        restored[path] = mode


def _find_chain(model: nn.Module, x: torch.Tensor) -> _Chain | None:
    """A verified chain split of ``model``, or None if its forward is not a plain chain.

    The check runs in eval mode (no BatchNorm statistics change, no dropout) under no_grad.
    """
    names = [n for n, _ in model.named_children()]
    if len(names) < 2 or any(True for _ in model.named_parameters(recurse=False)):
        return None
    modes = _module_modes(model)
    x = x[:2]  # eval mode makes the result batch-independent; two samples are enough
    try:
        model.eval()
        with torch.no_grad():
            try:
                expected = model(x)
            except Exception:  # any failure means: no split, train normally
                return None
            if not isinstance(expected, torch.Tensor):
                return None
            for flatten in (False, True):
                chain = _Chain(names, flatten)
                try:
                    got = chain.run(model, x, 0, len(names))
                except Exception:  # this candidate does not fit the model
                    continue
                if got.shape == expected.shape and torch.allclose(
                    got, expected, rtol=1e-4, atol=1e-5
                ):
                    return chain
        return None
    finally:
        _restore_modes(modes, model)


# --------------------------------------------------------------------------- verification


@dataclass
class _Snapshot:
    params: dict[str, tuple[torch.Tensor, bool]]  # name -> (copy, frozen)
    buffers: dict[str, tuple[torch.Tensor, bool, str]]  # name -> (copy, bn frozen, policy)


def _snapshot(model: nn.Module) -> _Snapshot:
    params: dict[str, tuple[torch.Tensor, bool]] = {}
    for name, p in model.named_parameters():  # de-duplicated: tied tensors appear once
        params[name] = (p.detach().to("cpu", copy=True), not p.requires_grad)
    buffers: dict[str, tuple[torch.Tensor, bool, str]] = {}
    for path, mod in iter_batchnorms(model):
        frozen = bn_is_frozen(mod)
        policy = bn_state(mod)
        for bname, buf in mod.named_buffers(prefix=path, recurse=False):
            if buf is not None:
                buffers[bname] = (buf.detach().to("cpu", copy=True), frozen, policy)
    return _Snapshot(params, buffers)


def _diff(before: torch.Tensor, after: torch.Tensor) -> tuple[bool, float]:
    after = after.detach().to("cpu")
    if before.shape != after.shape:
        return True, math.inf
    changed = not torch.equal(before, after)
    if not changed:
        return False, 0.0
    if not before.is_floating_point():  # num_batches_tracked: exact in double
        before, after = before.double(), after.double()
    delta = (after - before).abs()
    return True, float(delta.max()) if delta.numel() else 0.0


def _verify(
    model: nn.Module, snap: _Snapshot, unfrozen_at: dict[str, int], steps: int
) -> list[VerificationRow]:
    rows: list[VerificationRow] = []
    current = dict(model.named_parameters())

    def later_unfrozen(name: str) -> int | None:
        for group, epoch in unfrozen_at.items():
            if group in ("", name) or name.startswith(group + "."):
                return epoch
        return None

    for name, (before, frozen) in snap.params.items():
        p = current.get(name)
        if p is None:
            continue
        changed, delta = _diff(before, p)
        epoch = later_unfrozen(name) if frozen else None
        kept_frozen = frozen and epoch is None
        if kept_frozen:
            status = "MOVED" if changed else "ok"
        elif changed or steps == 0:
            status = "ok"
        else:
            status = "no gradient path"
        note = f"unfrozen at epoch {epoch}" if epoch is not None else ""
        rows.append(VerificationRow(name, "parameter", kept_frozen, changed, delta, status, note))
    current_buffers = dict(model.named_buffers())
    for name, (before, frozen, policy) in snap.buffers.items():
        buf = current_buffers.get(name)
        if buf is None:
            continue
        changed, delta = _diff(before, buf)
        kept_frozen = frozen and later_unfrozen(name) is None
        status = "ok"
        if kept_frozen and changed:
            # Under the "train" policy running statistics of a frozen BN are meant to update.
            status = "updated" if policy == "train" else "MOVED"
        rows.append(VerificationRow(name, "buffer", kept_frozen, changed, delta, status, policy))
    return rows


# --------------------------------------------------------------------------- schedule


def _resolve_schedule(model: nn.Module, schedule: Any, epochs: int) -> dict[int, list[str]]:
    """Map 1-based epoch -> groups to unfreeze at its start."""
    if schedule is None:
        return {}
    groups = top_level_groups(model)
    if schedule == "gradual":
        frozen = [g for g in groups if not any(p.requires_grad for p in _group_params(model, g))]
        # From the top of the model (its end) backwards, one group per epoch after the first.
        order = list(reversed(frozen))
        return {e: [order[e - 2]] for e in range(2, epochs + 1) if e - 2 < len(order)}
    if isinstance(schedule, dict):
        items = {int(k): v for k, v in schedule.items()}
    elif isinstance(schedule, (list, tuple)):
        items = {i + 2: v for i, v in enumerate(schedule)}
    else:
        raise TypeError(
            "unfreeze_schedule must be None, 'gradual', a list of group names (entry i is "
            "unfrozen at the start of epoch i + 2) or a dict {epoch: names}; "
            f"got {schedule!r}"
        )
    out: dict[int, list[str]] = {}
    for epoch, value in items.items():
        names = [value] if isinstance(value, str) else list(value or [])
        for name in names:
            try:
                model.get_submodule(name) if name else None
            except AttributeError:
                try:
                    model.get_parameter(name)
                except AttributeError:
                    raise ValueError(
                        f"unfreeze_schedule names {name!r}, which is not in the model; "
                        f"top-level groups are: {', '.join(groups)}"
                    ) from None
        if epoch < 1:
            raise ValueError(f"unfreeze_schedule epochs are 1-based; got {epoch}")
        if names:
            out[epoch] = names
    return out


def _group_params(model: nn.Module, group: str) -> list[nn.Parameter]:
    try:
        return list(model.get_submodule(group).parameters())
    except AttributeError:
        return [model.get_parameter(group)]


# --------------------------------------------------------------------------- the loop


def _report_bn_policy(model: nn.Module) -> str:
    states = {bn_state(m) for _, m in iter_batchnorms(model) if bn_is_frozen(m)}
    if not states:
        return "none"
    return states.pop() if len(states) == 1 else "mixed"


def finetune(
    model: nn.Module,
    data: Any = None,
    *,
    epochs: int = 1,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    num_classes: int | None = None,
    callback: Callable[[StepEvent], Any] | None = None,
    unfreeze_schedule: str | Sequence[Any] | dict[int, Any] | None = None,
    bn: str | None = None,
    augment: bool = False,
    cache_features: bool | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    stop: threading.Event | None = None,
) -> FineTuneReport:
    """Fine-tune the trainable part of ``model`` in place and verify the frozen part.

    Args:
        model: A classifier taking image batches; trained in place. Its train/eval mode is
            restored afterwards.
        data: None for :func:`synthetic_dataset` images, a Dataset or DataLoader yielding
            ``(inputs, labels)``, or an ImageFolder directory (resized to ``image_size``).
        epochs: Passes over the data.
        steps: Total optimizer steps; when given it overrides ``epochs`` (the data repeats
            as needed).
        batch_size: Used unless ``data`` is a DataLoader.
        lr: Learning rate of the parameters trainable at the start.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (momentum 0.9).
        num_classes: Classes of the task; if None, inferred from the dataset's ``classes``,
            ``num_classes`` or ``targets``, or by reading the labels of up to 10,000 items. A
            head with a different output size is replaced by a fresh, trainable ``nn.Linear``.
        callback: Called with a :class:`StepEvent` after every step; returning False stops.
        unfreeze_schedule: ``"gradual"`` unfreezes one more frozen top-level group per epoch,
            from the end of the model backwards, at ``lr / 2.6**k``; a list gives the group(s)
            for epochs 2, 3, ...; a dict maps 1-based epochs to group(s).
        bn: Re-apply this BatchNorm policy ("eval", "frozen", "train") to every fully frozen
            BatchNorm before training; None keeps the policies already set.
        augment: Random shifts and brightness jitter on the inputs.
        cache_features: Keep the frozen prefix's output after the first epoch and train later
            epochs on it. None means: when augment is off, a frozen prefix exists and
            ``epochs > 1``. Only used when the prefix is deterministic (no BatchNorm or
            dropout in train mode).
        image_size: Side of synthetic / ImageFolder images.
        seed: Seeds shuffling, augmentation and the new head.
        stop: A ``threading.Event``; when set, training stops after the current step.

    Returns:
        A :class:`FineTuneReport`; ``report.ok`` is True iff frozen weights and frozen
        "eval"/"frozen" BatchNorm statistics are bitwise unchanged.

    Raises:
        ValueError: nothing to train, bad arguments or data.
        TypeError: unsupported ``data``.
        NonFiniteLossError: the loss became NaN/inf (``exc.report`` holds the run so far).

    Example:
        >>> from torchvision.models import resnet18
        >>> from freeze_widgets import freeze
        >>> m = resnet18()
        >>> _ = freeze(m)
        >>> report = finetune(m, steps=2, num_classes=4)  # doctest: +SKIP
        >>> report.ok  # doctest: +SKIP
        True
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1 (or None), got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if bn is not None and bn not in BN_POLICIES:
        raise ValueError(f"bn must be one of {', '.join(BN_POLICIES)} or None; got {bn!r}")
    if cache_features and augment:
        raise ValueError(
            "cache_features=True cannot be combined with augment=True: augmented inputs "
            "change the frozen features every epoch"
        )
    if not isinstance(optimizer, str) or optimizer.lower() not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be 'adamw', 'adam' or 'sgd'; got {optimizer!r}")

    loader, dataset = _make_loader(data, batch_size=batch_size, image_size=image_size, seed=seed)
    if num_classes is None:
        num_classes = infer_num_classes(dataset)

    # Nothing trainable is an error before any work, unless a new head will be trainable.
    head = find_head(model)
    new_head = num_classes is not None and (head is None or head[1].out_features != num_classes)
    if not new_head and not _trainable(model):
        n = sum(1 for _ in model.parameters())
        raise ValueError(
            f"nothing to train: all {n} parameters are frozen; untick a module or call "
            "unfreeze(model, 'fc')"
        )
    planned = _planned_epochs(loader, epochs, steps)
    _resolve_schedule(model, unfreeze_schedule, planned)  # validate before touching the model

    report = FineTuneReport(num_classes=num_classes, optimizer=optimizer.lower(), lr=lr)
    modes = _module_modes(model)
    if num_classes is not None:
        report.head_replaced = _replace_head(model, num_classes, seed)
    # Resolved again now: a replaced head is trainable and must not count as a frozen group.
    schedule = _resolve_schedule(model, unfreeze_schedule, planned)
    if bn is not None:
        set_bn_policy(model, bn)
    report.bn_policy = _report_bn_policy(model)

    # Stale gradients on frozen tensors would be applied by momentum / weight decay.
    for p in model.parameters():
        if not p.requires_grad:
            p.grad = None
    opt = _make_optimizer(optimizer, _trainable(model), lr)
    in_optimizer = {id(p) for g in opt.param_groups for p in g["params"]}

    snap = _snapshot(model)
    device = next(iter(model.parameters())).device
    unfrozen_at: dict[str, int] = {}
    try:
        _train(
            model,
            loader,
            opt,
            in_optimizer,
            report,
            schedule=schedule,
            epochs=epochs,
            steps=steps,
            lr=lr,
            callback=callback,
            stop=stop,
            augment=augment,
            cache_features=cache_features,
            seed=seed,
            device=device,
            unfrozen_at=unfrozen_at,
        )
    except NonFiniteLossError as exc:
        report.verification = _verify(model, snap, unfrozen_at, report.steps)
        exc.report = report
        raise
    finally:
        _restore_modes(modes, model)
    report.verification = _verify(model, snap, unfrozen_at, report.steps)
    return report


def _planned_epochs(loader: DataLoader[Any], epochs: int, steps: int | None) -> int:
    if steps is None:
        return epochs
    try:
        per_epoch = len(loader)
    except TypeError:
        return epochs
    return max(1, math.ceil(steps / max(per_epoch, 1)))


def _train(
    model: nn.Module,
    loader: DataLoader[Any],
    opt: torch.optim.Optimizer,
    in_optimizer: set[int],
    report: FineTuneReport,
    *,
    schedule: dict[int, list[str]],
    epochs: int,
    steps: int | None,
    lr: float,
    callback: Callable[[StepEvent], Any] | None,
    stop: threading.Event | None,
    augment: bool,
    cache_features: bool | None,
    seed: int,
    device: torch.device,
    unfrozen_at: dict[str, int],
) -> None:
    try:
        per_epoch = len(loader)
    except TypeError:
        if steps is None:
            raise ValueError("data without a length (an IterableDataset) needs steps=") from None
        per_epoch = steps
    if per_epoch == 0:
        raise ValueError("the data is empty: no batches to train on")
    total = steps if steps is not None else epochs * per_epoch
    n_epochs = math.ceil(total / per_epoch)
    report.total_steps = total
    aug_gen = torch.Generator().manual_seed(seed + 1)
    shuffle_gen = torch.Generator().manual_seed(seed + 2)

    model.train()
    chain: _Chain | None = None
    chain_checked = False
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    cache_key: int | None = None
    cache_bytes = 0
    start = time.perf_counter()
    step = 0
    k_unfrozen = 0

    for epoch in range(1, n_epochs + 1):
        for group in schedule.get(epoch, []):
            k_unfrozen += 1
            group_lr = lr / ULMFIT_LR_FACTOR**k_unfrozen
            unfreeze(model, group)
            model.train()  # put the released BatchNorm layers back in training mode
            new = [p for p in _group_params(model, group) if p.requires_grad]
            new = [p for p in dict.fromkeys(new) if id(p) not in in_optimizer]
            if new:
                opt.add_param_group({"params": new, "lr": group_lr})
                in_optimizer.update(id(p) for p in new)
            unfrozen_at.setdefault(group, epoch)
            report.unfreeze_events.append(UnfreezeEvent(epoch, group, group_lr, len(new)))

        epoch_start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        prefix = chain.frozen_prefix(model) if chain is not None else 0
        use_cache = (
            cache is not None
            and cache_key == prefix
            and chain is not None
            and chain.prefix_deterministic(model, prefix)
        )
        want_cache = (
            not use_cache
            and not augment
            and (cache_features if cache_features is not None else n_epochs > 1)
            and epoch < n_epochs
        )
        if use_cache:
            assert cache is not None
            report.cached_epochs.append(epoch)
            batches: Iterable[Any] = _rebatch(cache, shuffle_gen)
        else:
            batches = loader
            cache, cache_bytes = None, 0
        collecting: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if not use_cache and chain_checked:
            prefix = chain.frozen_prefix(model) if chain is not None else 0
            collecting = _plan_cache(chain, model, prefix, want_cache)
            report.frozen_prefix = chain.names[:prefix] if chain is not None else []

        for batch in batches:
            if step >= total:
                break
            x, y = _split_batch(batch)
            x, y = x.to(device, non_blocking=True), y.to(device).long()
            if not chain_checked:
                # The split is verified once, on the first real batch; unfreezing later only
                # shortens the frozen prefix, it never changes the chain.
                chain_checked = True
                if any(not p.requires_grad for p in model.parameters()):
                    chain = _find_chain(model, x)
                prefix = chain.frozen_prefix(model) if chain is not None else 0
                collecting = _plan_cache(chain, model, prefix, want_cache)
                report.frozen_prefix = chain.names[:prefix] if chain is not None else []
            if augment:
                x = _augment(x, aug_gen)

            t0 = time.perf_counter()
            if use_cache:
                assert chain is not None
                out = chain.run(model, x, prefix, len(chain.names))
            elif chain is not None and prefix > 0:
                # The frozen prefix keeps no activations: nothing in it needs a gradient.
                with torch.no_grad():
                    feats = chain.run(model, x, 0, prefix)
                if collecting is not None:
                    collecting.append((feats.detach(), y))
                    cache_bytes += feats.numel() * feats.element_size()
                    if cache_bytes > MAX_CACHE_BYTES:
                        collecting, want_cache = None, False
                out = chain.run(model, feats, prefix, len(chain.names))
            else:
                out = model(x)
            loss = F.cross_entropy(out, y)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                report.step_seconds.append(time.perf_counter() - t0)
                _finish(report, start, stopped=True, reason=f"loss became {loss_value}")
                kind = "nan" if math.isnan(loss_value) else "infinite"
                report.error = (
                    f"loss became {kind} at step {step + 1} (epoch {epoch}); try a lower lr "
                    f"(lr={lr:g})"
                )
                raise NonFiniteLossError(report.error, report)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0

            step += 1
            acc = float((out.detach().argmax(1) == y).float().mean()) if out.dim() == 2 else 0.0
            n = int(y.shape[0])
            report.step_loss.append(loss_value)
            report.step_acc.append(acc)
            report.step_seconds.append(dt)
            report.steps = step
            report.samples += n
            loss_sum += loss_value * n
            correct += acc * n
            seen += n
            elapsed = time.perf_counter() - start
            eta = elapsed / step * (total - step)
            keep_going = True
            if callback is not None:
                keep_going = callback(
                    StepEvent(
                        step, total, epoch, loss_value, acc, elapsed, eta, len(opt.param_groups)
                    )
                )
            if keep_going is False:
                report.stopped_early, report.stop_reason = True, "callback returned False"
            elif stop is not None and stop.is_set():
                report.stopped_early, report.stop_reason = True, "stop requested"
            if report.stopped_early:
                break

        report.epochs = epoch
        report.epoch_seconds.append(time.perf_counter() - epoch_start)
        if seen:
            report.epoch_loss.append(loss_sum / seen)
            report.epoch_acc.append(correct / seen)
        if collecting is not None and not report.stopped_early and step < total:
            cache, cache_key = collecting, prefix
        if report.stopped_early or step >= total:
            break
    _finish(report, start, stopped=report.stopped_early, reason=report.stop_reason)


def _plan_cache(
    chain: _Chain | None, model: nn.Module, prefix: int, want: bool
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """An empty list to collect prefix features into this epoch, or None if not caching."""
    if want and chain is not None and prefix > 0 and chain.prefix_deterministic(model, prefix):
        return []
    return None


def _rebatch(
    cache: list[tuple[torch.Tensor, torch.Tensor]], g: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The cached epoch reshuffled into batches of the original size."""
    feats = torch.cat([f for f, _ in cache])
    labels = torch.cat([y for _, y in cache])
    size = cache[0][0].shape[0]
    order = torch.randperm(feats.shape[0], generator=g).to(feats.device)
    for i in range(0, feats.shape[0], size):
        idx = order[i : i + size]
        yield feats[idx], labels[idx]


def _finish(report: FineTuneReport, start: float, *, stopped: bool, reason: str | None) -> None:
    report.total_seconds = time.perf_counter() - start
    secs = report.total_seconds
    report.samples_per_second = report.samples / secs if secs > 0 else 0.0
    report.stopped_early = stopped
    report.stop_reason = reason
