"""Images held in memory as one tensor, with labels (and class names) for the digits and shapes."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

__all__ = ["InMemoryImages", "LabelledImages"]


class InMemoryImages(Dataset[tuple[torch.Tensor, int]]):
    """Images and labels held in memory, readable by ``finetune`` without iterating.

    The base of :class:`LabelledImages` (digits) and
    :class:`~freeze_widgets.data.synthetic.SyntheticShapes`.

    Attributes:
        images: ``(n, channels, size, size)`` float tensor.
        targets: ``(n,)`` int64 labels in ``0 .. len(classes) - 1``.
        classes: One readable name per label.
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


class LabelledImages(InMemoryImages):
    """Images and labels held in memory, with each image's row in its source collection.

    Attributes:
        images: ``(n, channels, size, size)`` float tensor.
        targets: ``(n,)`` int64 labels in ``0 .. len(classes) - 1``.
        classes: One readable name per label.
        indices: ``(n,)`` int64 row of each image in the source collection (for digits, the
            row in ``sklearn.datasets.load_digits()``), so splits can be checked for overlap.
    """

    def __init__(
        self, images: torch.Tensor, targets: torch.Tensor, classes: list[str], indices: torch.Tensor
    ) -> None:
        super().__init__(images, targets, classes)
        self.indices = indices

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return f"LabelledImages(n={len(self)}, classes={self.classes}, {c}x{h}x{w})"
