"""Datasets by name: what lets ``finetune(model, "digits")`` and the fine-tune panel pick data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from freeze_widgets.data.digits import digits_dataset
from freeze_widgets.data.synthetic import synthetic_dataset

__all__ = ["DATASET_NAMES", "finetune_dataset", "named_dataset"]


def _synthetic(**kwargs: Any) -> Dataset[Any]:
    return synthetic_dataset(**kwargs)


_REGISTRY: dict[str, Callable[..., Dataset[Any]]] = {
    "digits": digits_dataset,
    "synthetic": _synthetic,
}

#: The names :func:`named_dataset` (and ``finetune(model, name)``) understand.
DATASET_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def named_dataset(name: str, **kwargs: Any) -> Dataset[Any]:
    """A dataset by name; ``kwargs`` go to its factory.

    ``"digits"`` is :func:`digits_dataset`; ``"synthetic"`` is
    :func:`freeze_widgets.data.synthetic.synthetic_dataset`.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: an unknown name (the message lists the known ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name (str); got {type(name).__name__}")
    factory = _REGISTRY.get(name.lower())
    if factory is None:
        known = ", ".join(repr(n) for n in DATASET_NAMES)
        raise ValueError(
            f"unknown dataset {name!r}; known names: {known} (or pass a torch Dataset, a "
            "DataLoader or an ImageFolder directory)"
        )
    return factory(**kwargs)


def finetune_dataset(name: str, *, image_size: int, seed: int = 0) -> Dataset[Any]:
    """The training data ``finetune(model, name)`` uses: images a torchvision model accepts.

    Digits come as the train split in 3 channels at ``image_size``; synthetic images use their
    defaults at ``image_size``. The test split of the digits stays unseen, for evaluation.
    """
    if isinstance(name, str) and name.lower() == "digits":
        return digits_dataset(split="train", image_size=image_size, seed=seed, channels=3)
    return named_dataset(name, image_size=image_size, seed=seed)
