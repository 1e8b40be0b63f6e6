"""Loaders and batches: class-count inference, the one ImageFolder loader, batch splitting.

:func:`make_loader` turns whatever the user passes (None, a name, a Dataset, a DataLoader or an
ImageFolder directory) into a DataLoader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from freeze_widgets.data.named import DATASET_NAMES, finetune_dataset
from freeze_widgets.data.synthetic import synthetic_dataset

__all__ = [
    "augment_batch",
    "class_labels",
    "image_folder",
    "infer_num_classes",
    "labels_of",
    "make_loader",
    "split_batch",
]


def labels_of(dataset: Any) -> torch.Tensor | None:
    """All labels of a map-style dataset if cheaply available (or small enough to read).

    Raises:
        ValueError: the labels are fractional or negative (:func:`class_labels`).
    """
    for attr in ("targets", "labels"):
        value = getattr(dataset, attr, None)
        if value is not None:
            try:
                found = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                continue
            return class_labels(found, None, f"the dataset's {attr}")
    if isinstance(dataset, TensorDataset):
        return class_labels(dataset.tensors[-1], None, "the dataset's labels (its last tensor)")
    try:
        n = len(dataset)
    except TypeError:
        return None
    if n > 10_000:
        return None
    try:  # float(), not int(): int(0.9) would hide a fractional label as class 0
        read = torch.as_tensor([float(torch.as_tensor(dataset[i][1])) for i in range(n)])
    except (TypeError, ValueError, IndexError, KeyError, RuntimeError):
        return None
    return class_labels(read, None, "the dataset's labels")


def class_labels(labels: Any, num_classes: int | None, where: str) -> torch.Tensor:
    """``labels`` as int64 class indices, or a ValueError naming ``where`` and the way out.

    Float labels are taken only when they are whole numbers (``2.0``): ``0.9`` would silently
    become class 0. One-hot or soft labels (one row per input) are refused, not guessed at.
    """
    y = torch.as_tensor(labels)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dim() > 1:
        raise ValueError(
            f"{where}: the labels have shape {tuple(y.shape)}; finetune takes one class index "
            "per input (0 .. num_classes-1). For one-hot or soft labels pass labels.argmax(1)"
        )
    if y.is_floating_point() or y.is_complex():
        whole = (
            y.is_floating_point() and bool(torch.isfinite(y).all()) and bool((y == y.round()).all())
        )
        if not whole:
            sample = ", ".join(f"{float(v):g}" for v in y.reshape(-1)[:4].real)
            raise ValueError(
                f"{where}: the labels are fractional numbers ({sample}, ...); finetune takes "
                "integer class indices, and truncating them would train on the wrong classes. "
                "Pass labels as ints (e.g. labels.round().long() if that is what they mean)"
            )
    y = y.long()
    if y.numel():
        low, high = int(y.min()), int(y.max())
        top = None if num_classes is None else num_classes - 1
        if low < 0 or (top is not None and high > top):
            bad = low if low < 0 else high
            raise ValueError(
                f"{where}: label {bad} is outside 0..{top if top is not None else 'N-1'} "
                f"(num_classes={num_classes}); pass num_classes= covering every label, or fix "
                "the data"
            )
    return y


def infer_num_classes(dataset: Any) -> int | None:
    """Number of classes from ``classes`` / ``num_classes`` / the labels; None if unknown."""
    classes = getattr(dataset, "classes", None)
    if classes is not None and not callable(classes):
        return len(classes)
    num = getattr(dataset, "num_classes", None)
    if isinstance(num, int):
        return num
    labels = labels_of(dataset)
    if labels is None or labels.numel() == 0:
        return None
    return int(labels.max()) + 1


def image_folder(path: Path, image_size: int) -> Dataset[Any]:
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


def make_loader(
    data: Any, *, batch_size: int, image_size: int, seed: int
) -> tuple[DataLoader[Any], Any]:
    """A DataLoader for ``data`` and the dataset behind it."""
    if data is None:
        data = synthetic_dataset(image_size=image_size, seed=seed)
    if isinstance(data, (str, Path)):
        data = _named_or_folder(data, image_size=image_size, seed=seed)
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
        f"data must be None (synthetic images), a dataset name ('digits', 'synthetic'), a torch "
        f"Dataset, a DataLoader or an ImageFolder directory path; got {type(data).__name__}"
    )


def _named_or_folder(data: str | Path, *, image_size: int, seed: int) -> Dataset[Any]:
    """A dataset by name (an existing folder of that name wins), or an ImageFolder directory."""
    path = Path(data).expanduser()
    if path.is_dir():
        return image_folder(path, image_size)
    if isinstance(data, str) and data.lower() in DATASET_NAMES:
        return finetune_dataset(data.lower(), image_size=image_size, seed=seed)
    raise ValueError(
        f"data={str(data)!r} is not a directory (expected ImageFolder layout: one sub-folder "
        f"per class) nor a dataset name ({', '.join(DATASET_NAMES)})"
    )


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` from a tuple/list batch or a dict with image/label-like keys."""
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


def augment_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
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
