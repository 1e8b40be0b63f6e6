"""Offline teaching data: scikit-learn's 8x8 handwritten digits as a torch Dataset, and names.

scikit-learn ships the UCI digits (1,797 grey images, 8x8 pixels, values 0..16) inside its
package, so :func:`digits_dataset` works without any download. It gives a fixed train/test
split, few-shot subsets (``per_class``), a subset of the classes relabelled ``0..k-1``, an
optional resize and a 3-channel copy so torchvision models accept the images.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal

import torch
from torch.nn import functional as F

from freeze_widgets.data.images import LabelledImages

__all__ = ["DIGITS_TEST_FRACTION", "digits_dataset"]

Split = Literal["train", "test", "all"]
_SPLITS: tuple[str, ...] = ("train", "test", "all")

#: Share of each digit class held out as the test split (fixed, independent of ``seed``).
DIGITS_TEST_FRACTION = 0.3

# The train/test split is drawn once with this seed, never with the caller's: a test image
# must never become a training image because a different seed was asked for.
_SPLIT_SEED = 20_240_601


@lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(n, 8, 8)`` floats in [0, 1] and ``(n,)`` labels (read once)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits dataset needs scikit-learn (it ships the 8x8 digits offline): "
            'pip install "freeze_widgets[teach]"  (or: pip install scikit-learn)'
        ) from None
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def _split_indices(labels: torch.Tensor, split: str) -> torch.Tensor:
    """Rows of ``split``: per digit, a fixed shuffle, the last 30 % held out as the test set."""
    g = torch.Generator().manual_seed(_SPLIT_SEED)
    chosen: list[torch.Tensor] = []
    for digit in range(10):
        rows = torch.nonzero(labels == digit).flatten()
        rows = rows[torch.randperm(rows.numel(), generator=g)]
        n_test = round(rows.numel() * DIGITS_TEST_FRACTION)
        if split == "train":
            rows = rows[: rows.numel() - n_test]
        elif split == "test":
            rows = rows[rows.numel() - n_test :]
        chosen.append(rows)
    return torch.cat(chosen).sort().values


def _check_digits_args(
    classes: Iterable[int] | None, split: object, per_class: int | None, channels: int
) -> list[int]:
    """The digits to keep, after validating every argument (nothing is loaded before this)."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, _SPLITS))}; got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (for torchvision models); got {channels}")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int)):
        raise TypeError(f"per_class must be an int or None; got {type(per_class).__name__}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be at least 1 (or None for all); got {per_class}")
    if classes is None:
        return list(range(10))
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
        raise TypeError(f"classes must be a sequence of digits 0-9; got {type(classes).__name__}")
    try:
        # operator.index accepts numpy integers but not floats or bools-as-strings.
        digits = [operator.index(d) for d in classes]
    except TypeError:
        raise TypeError(f"classes must be integer digits 0-9; got {list(classes)!r}") from None
    if not digits or any(not 0 <= d <= 9 for d in digits):
        raise ValueError(f"classes must be distinct digits 0-9, at least one; got {digits}")
    if len(set(digits)) != len(digits):
        raise ValueError(f"classes must be distinct digits; got {digits}")
    return digits


def digits_dataset(
    *,
    classes: Iterable[int] | None = None,
    split: Split = "train",
    per_class: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    channels: int = 1,
) -> LabelledImages:
    """The 8x8 handwritten digits of scikit-learn as an in-memory torch Dataset (offline).

    The train/test split is fixed (30 % of each digit held out, the same for every ``seed``);
    ``seed`` only chooses which ``per_class`` examples are kept and their order.

    Args:
        classes: Digits to keep, e.g. ``[5, 6, 7, 8, 9]``; label ``i`` is ``classes[i]``.
            None keeps all ten with label = digit.
        split: ``"train"`` (about 1,260 images), ``"test"`` (about 540) or ``"all"``.
        per_class: Keep at most this many images of each class (few-shot); None keeps all.
        image_size: Resize to this side (bilinear); None keeps 8x8.
        seed: Chooses the ``per_class`` subset and shuffles the order.
        channels: 1 for grey, 3 for a grey copy in each channel (torchvision models).

    Returns:
        A :class:`LabelledImages` with values in [0, 1] and ``classes`` named by digit.

    Raises:
        ImportError: scikit-learn is not installed.
        ValueError / TypeError: a bad argument (checked before loading anything).

    Example:
        >>> ds = digits_dataset(classes=[3, 5], per_class=4, image_size=16, channels=3)
        >>> len(ds), ds[0][0].shape, ds.classes
        (8, torch.Size([3, 16, 16]), ['3', '5'])
    """
    digits = _check_digits_args(classes, split, per_class, channels)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)):
        raise TypeError(f"image_size must be an int or None; got {type(image_size).__name__}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive (or None for 8x8); got {image_size}")
    images, labels = _load_digits()
    rows = _split_indices(labels, split)
    g = torch.Generator().manual_seed(seed)
    kept: list[torch.Tensor] = []
    for digit in digits:
        of_digit = rows[labels[rows] == digit]
        of_digit = of_digit[torch.randperm(of_digit.numel(), generator=g)]
        kept.append(of_digit if per_class is None else of_digit[:per_class])
    chosen = torch.cat(kept)
    chosen = chosen[torch.randperm(chosen.numel(), generator=g)]
    relabel = torch.full((10,), -1, dtype=torch.int64)
    relabel[torch.tensor(digits)] = torch.arange(len(digits))
    x = images[chosen].unsqueeze(1)
    if image_size is not None and image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return LabelledImages(
        x.contiguous(), relabel[labels[chosen]], [str(d) for d in digits], chosen.clone()
    )
