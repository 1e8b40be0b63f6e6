"""``FreezeGuardTrainerCallback``: the freeze checks as a transformers ``TrainerCallback``.

Example:
    >>> trainer = Trainer(model, args, callbacks=[FreezeGuardTrainerCallback(spec)], ...)
    >>> trainer.train()
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from freeze_widgets.integrations._common import GuardSessionOwner

__all__ = ["FreezeGuardTrainerCallback"]


class FreezeGuardTrainerCallback(GuardSessionOwner, TrainerCallback):  # type: ignore[misc]
    """Apply a freeze, audit the optimizer at train start, and guard every optimizer step.

    Args:
        spec: Applied when the Trainer is built (``on_init_end``, before it creates its
            optimizer); when the callback is added later, at train start, where the audit will
            then flag an optimizer built before the freeze.
        raise_on_violation: Stop training with ``FrozenWeightMoved`` at the step that moved a
            frozen tensor.
        keep_copies: Keep full copies of frozen tensors for exact max-abs-diffs.

    After ``train()``, ``findings`` holds the audit and ``report`` the guard's report; both are
    also logged on the ``freeze_widgets.integrations`` logger.
    """

    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        model = kw.get("model")
        if isinstance(model, nn.Module):
            self._session.apply_spec(model)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        model, optimizer = kw.get("model"), kw.get("optimizer")
        if not isinstance(model, nn.Module):
            raise TypeError("FreezeGuardTrainerCallback needs the Trainer's model at train start")
        self._session.begin(model, [optimizer] if optimizer is not None else [])

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._session.end()
