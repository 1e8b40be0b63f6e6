"""Offline synthetic shapes: a small image-classification set a CNN learns in seconds."""

from __future__ import annotations

import math

import torch

from freeze_widgets.data.images import InMemoryImages

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_SYNTHETIC_CLASSES",
    "DEFAULT_SYNTHETIC_N",
    "SyntheticShapes",
    "synthetic_dataset",
]

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


class SyntheticShapes(InMemoryImages):
    """Procedurally drawn image classes, generated once in memory.

    Attributes:
        images: ``(n, 3, size, size)`` float tensor, roughly zero-centred.
        targets: ``(n,)`` int64 labels, balanced over the classes.
        classes: One readable name per class.
    """

    def __repr__(self) -> str:
        size = self.images.shape[-1]
        return f"SyntheticShapes(n={len(self)}, classes={self.num_classes}, {size}x{size})"


def _draw(pattern: int, size: int, g: torch.Generator) -> torch.Tensor:  # noqa: PLR0911 (one return per pattern reads as a table)
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


# --------------------------------------------------------------------------- datasets and loaders
