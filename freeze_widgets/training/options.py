"""One validated set of fine-tune options for ``finetune``, the multi-process run and the CLI.

Every entry point checks its arguments here, so the same bad value gets the same error
everywhere: a wrong type is a ``TypeError`` naming the argument, a value out of range a
``ValueError`` naming it and the allowed range. Nothing is changed before this passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from freeze_widgets.base.checks import BnPolicy, check_bn_policy

__all__ = [
    "OPTIMIZERS",
    "FineTuneOptions",
    "OptimizerName",
    "StepPlan",
    "batches_in",
    "make_optimizer",
    "plan_steps",
    "require_count",
    "require_positive_number",
]

OptimizerName = Literal["adamw", "adam", "sgd"]

#: The optimizers ``finetune`` offers, by lower-case name (SGD with momentum 0.9).
OPTIMIZERS: dict[str, Callable[[list[Any], float], torch.optim.Optimizer]] = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}
assert tuple(OPTIMIZERS) == get_args(OptimizerName)


def make_optimizer(
    name: str, params: list[nn.Parameter] | list[dict[str, Any]], lr: float
) -> torch.optim.Optimizer:
    """The optimizer ``name`` (validated by :func:`check_optimizer`) over parameters or groups."""
    return OPTIMIZERS[check_optimizer(name)](params, lr)


def require_count(value: object, argument: str, *, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum`` (bools and floats are refused, not truncated)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{argument} must be an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{argument} must be at least {minimum}; got {value}")
    return value


def require_positive_number(value: object, argument: str) -> float:
    """``value`` as a finite float above 0 (an int is fine; a bool or a string is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{argument} must be a number; got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{argument} must be a positive finite number; got {value!r}")
    return float(value)


def check_optimizer(name: object) -> OptimizerName:
    choices = ", ".join(repr(n) for n in OPTIMIZERS)
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be one of {choices}; got {type(name).__name__} {name!r}")
    if name.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {choices}; got {name!r}")
    return name.lower()  # type: ignore[return-value]


@dataclass(frozen=True)
class FineTuneOptions:
    """The run-shaping arguments every fine-tune entry point takes, checked once."""

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: OptimizerName = "adamw"
    bn: BnPolicy | None = None
    seed: int = 0

    @classmethod
    def checked(
        cls,
        *,
        epochs: object = 1,
        steps: object = None,
        batch_size: object = 32,
        lr: object = 1e-3,
        optimizer: object = "adamw",
        bn: object = None,
        seed: object = 0,
    ) -> FineTuneOptions:
        """Validated options, or a TypeError/ValueError naming the first bad argument."""
        return cls(
            epochs=require_count(epochs, "epochs"),
            steps=None if steps is None else require_count(steps, "steps"),
            batch_size=require_count(batch_size, "batch_size"),
            lr=require_positive_number(lr, "lr"),
            optimizer=check_optimizer(optimizer),
            bn=check_bn_policy(bn, allow_none=True),
            seed=require_count(seed, "seed", minimum=0),
        )


@dataclass(frozen=True)
class StepPlan:
    """How long a run is: total optimizer steps and the epochs they span."""

    total_steps: int
    epochs: int


def plan_steps(epochs: int, steps: int | None, batches_per_epoch: int | None) -> StepPlan:
    """The one steps/epochs planner: ``steps`` wins over ``epochs``; the data may repeat.

    Args:
        epochs: Passes over the data (used when ``steps`` is None).
        steps: Total optimizer steps, or None.
        batches_per_epoch: Batches in one pass, or None for data without a length.

    Raises:
        ValueError: the data is empty, or has no length and ``steps`` is None.
    """
    if batches_per_epoch is None:
        if steps is None:
            raise ValueError("data without a length (an IterableDataset) needs steps=")
        batches_per_epoch = steps
    if batches_per_epoch == 0:
        raise ValueError("the data is empty: no batches to train on")
    total = steps if steps is not None else epochs * batches_per_epoch
    return StepPlan(total, math.ceil(total / batches_per_epoch))


def batches_in(loader: object) -> int | None:
    """``len(loader)``, or None when the data has no length."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
