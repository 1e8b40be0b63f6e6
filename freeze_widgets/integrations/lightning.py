"""``FreezeGuardCallback``: the freeze checks as a Lightning callback (needs ``lightning``).

Example:
    >>> trainer = Trainer(callbacks=[FreezeGuardCallback(spec)])
    >>> trainer.fit(module)
    >>> print(trainer.callbacks[0].report)
"""

from __future__ import annotations

from typing import Any

from torch import nn

try:
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package name
    from pytorch_lightning import LightningModule, Trainer  # type: ignore[no-redef,assignment]
    from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef,assignment]

from freeze_widgets.integrations._common import GuardSessionOwner

__all__ = ["FreezeGuardCallback"]


class FreezeGuardCallback(GuardSessionOwner, Callback):  # type: ignore[misc]
    """Apply a freeze, audit the optimizers at train start, and guard every optimizer step.

    Args:
        spec: Applied to the LightningModule in ``setup`` (before ``configure_optimizers``);
            None keeps the model's own freeze.
        raise_on_violation: Stop training with ``FrozenWeightMoved`` at the step that moved a
            frozen tensor.
        keep_copies: Keep full copies of frozen tensors for exact max-abs-diffs.

    After ``fit``, ``findings`` holds the audit and ``report`` the guard's report; both are also
    logged on the ``freeze_widgets.integrations`` logger.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._session.apply_spec(pl_module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        wrapped = getattr(trainer.strategy, "model", None)
        self._session.begin(
            pl_module, trainer.optimizers, wrapped if isinstance(wrapped, nn.Module) else None
        )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._session.end()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._session.abort()

    def state_dict(self) -> dict[str, Any]:
        return {}
