"""Whether a demo fine-tune keeps the model's head, decided (and said) before the run.

A demo must not rewrite the user's model unasked: when the data's classes fit the head (labels
below its output count) the head is kept; otherwise the panel says which layer a new head would
replace and lets the user train a copy or change the model itself.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from freeze_widgets.base.modules import set_submodule
from freeze_widgets.data.loaders import infer_num_classes
from freeze_widgets.data.synthetic import DEFAULT_SYNTHETIC_CLASSES
from freeze_widgets.training.head import find_head

__all__ = ["HeadPlan", "apply_trained", "data_classes", "plan_head", "resolve_data"]

_NAMED_CLASSES = {"synthetic": DEFAULT_SYNTHETIC_CLASSES, "digits": 10}


def resolve_data(given: Any, text: str) -> Any:
    """What to train on: the object passed to the panel, else its data field.

    The field takes ``synthetic`` (or nothing), ``digits``, or an ImageFolder path.
    """
    if given is not None:
        return given
    text = text.strip()
    return None if text in ("", "synthetic") else text


def data_classes(data: Any) -> int | None:
    """The data's class count without loading images; None when it cannot be told cheaply."""
    if data is None or (isinstance(data, str) and data in _NAMED_CLASSES):
        return _NAMED_CLASSES["synthetic" if data is None else data]
    if isinstance(data, str | os.PathLike):
        folder = Path(data).expanduser()
        if not folder.is_dir():
            return None  # finetune() says what is wrong with the path
        return sum(1 for child in folder.iterdir() if child.is_dir()) or None
    dataset = data.dataset if isinstance(data, DataLoader) else data
    try:
        return infer_num_classes(dataset)
    except Exception:  # an unusual dataset: finetune() checks the labels itself
        return None


@dataclass(frozen=True)
class HeadPlan:
    """What the run does with the head, and the ``num_classes`` to pass to finetune().

    Attributes:
        keep: The head stays as it is (the run changes only trainable weights).
        num_classes: Passed to finetune(): the head's own output count when kept.
        line: One sentence saying so, shown before the run.
    """

    keep: bool
    num_classes: int | None
    line: str


def plan_head(model: nn.Module, data: Any, classes: int) -> HeadPlan:
    """Keep the head when the data's classes fit it; else say what a new head replaces.

    Args:
        model: The user's model.
        data: What :func:`resolve_data` returned.
        classes: The panel's class field (0: from the data).
    """
    wanted = classes or data_classes(data)
    found = find_head(model)
    if found is None:
        return HeadPlan(True, wanted, "Head: the model has no nn.Linear head; it is trained as is.")
    path, head = found
    outputs = head.out_features
    if wanted is None or wanted <= outputs:
        fits = "its labels are checked against them" if wanted is None else f"{wanted} fit"
        return HeadPlan(
            True,
            outputs,
            f"Head: {path} keeps its {outputs} outputs (the data's classes: {fits}).",
        )
    return HeadPlan(
        False,
        wanted,
        f"Head: the data has {wanted} classes but {path} has {outputs} outputs, so this run "
        f"needs a new head {path}: Linear({head.in_features}->{wanted}). Choose below: train "
        "a copy (your model stays as it is) or replace the head in your model.",
    )


def apply_trained(model: nn.Module, trained: nn.Module) -> None:
    """Give ``model`` the head and weights of ``trained``, a fine-tuned copy of it.

    Validated first (the copy's head path must be a module of ``model``; every other tensor
    must match by name and shape), so a mismatch raises with ``model`` as it was.
    """
    found = find_head(trained)
    if found is None:
        raise ValueError("the trained copy has no nn.Linear head to apply")
    path, head = found
    model.get_submodule(path)  # raises AttributeError naming the path if the model changed
    state = trained.state_dict()
    mine = model.state_dict()
    prefix = f"{path}."
    bad = [
        k
        for k, v in mine.items()
        if not k.startswith(prefix) and (k not in state or state[k].shape != v.shape)
    ]
    if bad:
        raise ValueError(
            f"the model changed since the copy was trained ({bad[0]} differs); run again"
        )
    set_submodule(model, path, copy.deepcopy(head))
    model.load_state_dict(state)
