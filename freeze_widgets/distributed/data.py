"""The training data of a distributed run, built the same way on every rank."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from freeze_widgets.data.loaders import image_folder
from freeze_widgets.data.synthetic import DEFAULT_SYNTHETIC_CLASSES, synthetic_dataset
from freeze_widgets.distributed.job import JobConfig

__all__ = ["build_dataset"]


def build_dataset(job: JobConfig) -> Dataset[Any]:
    """Synthetic shapes, an ImageFolder (``"dir:..."``) or a saved Dataset (``"file:..."``)."""
    if job.data is None:
        classes = job.num_classes or DEFAULT_SYNTHETIC_CLASSES
        return synthetic_dataset(job.synthetic_n, classes, job.image_size, job.seed)
    kind, _, where = job.data.partition(":")
    if kind == "dir":
        return image_folder(Path(where), job.image_size)
    if kind == "file":
        dataset = torch.load(where, weights_only=False)
        if not isinstance(dataset, Dataset):
            raise TypeError(f"{where} holds a {type(dataset).__name__}, not a torch Dataset")
        return dataset
    raise ValueError(f"unknown data reference {job.data!r} (expected 'dir:...' or 'file:...')")
