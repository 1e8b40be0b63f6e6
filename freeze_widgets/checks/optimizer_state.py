"""What an optimizer holds: one optimizer or several, a parameter's state, and momentum.

One home for the momentum rule, read by the audit, its learning-rate checks and the guard, so
they never disagree about the same optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["MOMENTUM_KEYS", "carries_momentum", "optimizer_list", "optimizer_state"]

# State that moves a parameter even when its gradient is zero: first moments (SGD and RMSprop
# momentum, the Adam family's exp_avg). Second moments (exp_avg_sq, square_avg, sum, ...) only
# scale an update that is zero anyway; NAdam's mu_product and ASGD's ax are bookkeeping that
# never moves the parameter. The guard's causes and the audit's wording both read this list.
MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")


def optimizer_list(optimizer: object, *, allow_none: bool = False) -> list[torch.optim.Optimizer]:
    """One optimizer or an iterable of them, as a list (None gives ``[]`` when allowed).

    Raises:
        TypeError: Anything else.
    """
    if optimizer is None and allow_none:
        return []
    if isinstance(optimizer, torch.optim.Optimizer):
        return [optimizer]
    if isinstance(optimizer, Iterable) and not isinstance(optimizer, (str, bytes, Mapping)):
        items = list(optimizer)
        if all(isinstance(o, torch.optim.Optimizer) for o in items):
            return items
    raise TypeError(
        "optimizer must be a torch.optim.Optimizer or a list of them; got "
        f"{type(optimizer).__name__} (an object that only looks like an optimizer cannot be "
        "hooked: wrap its parameters in a torch.optim.Optimizer subclass)"
    )


def optimizer_state(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> Mapping[str, Any]:
    """``optimizer``'s state for ``p``, looking inside wrappers that keep it in an inner optimizer.

    ``ZeroRedundancyOptimizer`` keeps the state of this rank's shard in ``.optim``;
    accelerate's and Lightning's wrappers keep theirs in ``.optimizer``.
    """
    seen: set[int] = set()
    opt: object = optimizer
    while isinstance(opt, torch.optim.Optimizer) and id(opt) not in seen:
        seen.add(id(opt))
        state: Mapping[str, Any] = opt.state.get(p) or {}
        if state:
            return state
        opt = getattr(opt, "optim", None) or getattr(opt, "optimizer", None)
    return {}


def carries_momentum(state: Mapping[str, Any]) -> bool:
    """Whether this state can move its parameter at the next step with a zero gradient."""
    return any(
        isinstance(state.get(k), torch.Tensor) and bool(state[k].ne(0).any()) for k in MOMENTUM_KEYS
    )
