"""Checks :func:`~freeze_widgets.training.finetune` makes before it trains, and the rollback.

A fine-tune that fails on its first batch (labels beyond the head, images the model cannot take)
must not leave a new random head in the user's model: the data is checked against the model
with one forward pass on one small batch, in eval mode without gradients, and every change made
while preparing (head replacement, BatchNorm policy) is undone if anything fails.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from freeze_widgets.base.modules import preserved_modes
from freeze_widgets.base.wording import first_line
from freeze_widgets.data.loaders import class_labels, labels_of, split_batch

__all__ = ["check_one_batch", "require_finite_inputs"]

_SAMPLE = 2  # eval mode makes one forward batch-independent; two items keep BatchNorm1d happy


def check_one_batch(
    model: nn.Module, loader: DataLoader[Any], num_classes: int | None, *, new_head: bool = False
) -> None:
    """Labels within ``num_classes`` and one forward pass on two items of the data.

    With ``new_head`` (a head of ``num_classes`` outputs will replace the model's own), the
    model's output size is not compared with ``num_classes``. Nothing is changed: the forward
    runs in eval mode without gradients and every module's mode is put back.

    Raises:
        ValueError: labels outside ``[0, num_classes)``, or the model fails on the inputs or
            returns something that is not ``(batch, classes)`` logits.
    """
    dataset = loader.dataset
    labels = labels_of(dataset) if not isinstance(dataset, IterableDataset) else None
    if labels is not None and labels.numel() and num_classes is not None:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"the data's labels run from {low} to {high}, but num_classes={num_classes}: "
                f"pass num_classes={max(high + 1, num_classes)} (or leave it None to infer it)"
            )
    sample = _sample_batch(loader)
    if sample is not None:
        _forward_once(model, sample, None if new_head else num_classes)


def _sample_batch(loader: DataLoader[Any]) -> Any:
    """Two items collated like the loader does, without touching its shuffling generator."""
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset):
        return None
    try:
        n = min(_SAMPLE, len(dataset))  # type: ignore[arg-type]
        items = [dataset[i] for i in range(n)]
    except (TypeError, IndexError, KeyError):
        return None
    return loader.collate_fn(items) if items else None


def _forward_once(model: nn.Module, batch: Any, num_classes: int | None) -> None:
    x, y = split_batch(batch)
    class_labels(y, num_classes, "the first items of the data")
    require_finite_inputs(x, "the first items of the data")
    device = next(iter(model.parameters())).device
    try:
        with preserved_modes(model, eval_inside=True), torch.no_grad():
            out = model(x.to(device))
    except Exception as exc:  # any failure means the data does not fit the model
        raise ValueError(
            f"the model cannot take the data: one forward pass on inputs of shape "
            f"{tuple(x.shape)} failed with {first_line(exc, limit=230)}. Check the "
            "image size and channels (image_size=, or a dataset shaped like the model's input)."
        ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"finetune trains classifiers: the model must return (batch, classes) logits; it "
            f"returned {shape}"
        )
    if num_classes is not None and out.shape[1] != num_classes:
        raise ValueError(
            f"the model returns {out.shape[1]} classes but num_classes={num_classes}, and no "
            "replaceable nn.Linear head was found: give the model a final nn.Linear or pass "
            f"num_classes={out.shape[1]}"
        )


def require_finite_inputs(inputs: Any, where: str) -> None:
    """Raise before a forward when a floating-point input holds NaN or inf.

    A training-mode forward writes BatchNorm running statistics before any loss exists
    (docs/design.md trap 24), so the inputs are checked first; one pass over them is cheap
    next to the forward.
    """
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        return
    finite = torch.isfinite(inputs)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(inputs).sum())
    n_inf = int((~finite).sum()) - n_nan
    first = tuple(int(i) for i in (~finite).nonzero()[0])
    raise ValueError(
        f"{where}: the inputs hold {n_nan} NaN and {n_inf} inf values (the first at index "
        f"{first} of a {tuple(inputs.shape)} tensor); nothing was trained on them. Clean the "
        "data (drop those items, or torch.nan_to_num) and run again"
    )
