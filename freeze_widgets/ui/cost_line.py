"""The header's live training-memory line, updated on every tick from the counts alone.

Weights, gradients and optimizer state are what :class:`~freeze_widgets.cost.estimate.CostModel`
sums over ``requires_grad``; gradients and state scale with the trainable count the header already
has, so a tick costs O(1) here (no walk over the parameters). Activations need a forward and depend
on the batch: they are left to :func:`~freeze_widgets.cost.estimate.estimate_cost`, asked for
explicitly (:meth:`FreezeExplorer.cost`), never on the tick path.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from freeze_widgets.cost.estimate import STATES_PER_ELEMENT, CostEstimate, CostModel
from freeze_widgets.tree import ParamCounts
from freeze_widgets.ui.messages import one_line

__all__ = ["LiveCost"]

OPTIMIZER = "adamw"


class LiveCost:
    """Training memory of one step under the current freeze, from the header's counts.

    Args:
        model: The explorer's model (only read: parameter and buffer sizes, once per reload).
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self.error: str | None = None
        self._weight_bytes = 0
        self._item_size = 4
        self.assumptions: tuple[str, ...] = ()
        self.reload()

    def reload(self) -> None:
        """Re-read the weight bytes (after a refresh or a BatchNorm swap changed modules)."""
        try:
            cost = CostModel(self._model, example_inputs=False)
            base = cost.estimate(OPTIMIZER, activations=False)
        except Exception as exc:  # a model the estimate cannot handle: say so, keep counting
            self.error = one_line(exc)
            return
        self.error = None
        self._weight_bytes = base.weight_bytes
        self._item_size = cost.dtype.itemsize
        self.assumptions = (
            "One training step with AdamW (2 state tensors per trainable element), float32.",
            "Counts weights and buffers, one gradient per trainable element and the "
            "optimizer state.",
            "Activations are not included (they depend on the batch): "
            "explorer.cost() or estimate_cost(model) measures them with a meta-device forward.",
        )

    def estimate(self, counts: ParamCounts) -> CostEstimate | None:
        """The estimate for these counts (None if the model could not be estimated)."""
        if self.error is not None:
            return None
        return replace(self._one(counts.trainable), unfrozen=self._one(counts.total))

    def _one(self, trainable: int) -> CostEstimate:
        grads = trainable * self._item_size
        states = grads * STATES_PER_ELEMENT[OPTIMIZER]
        # backward_share needs the parameters in order: not tracked live (nan, never shown).
        return CostEstimate(
            weight_bytes=self._weight_bytes,
            grad_bytes=grads,
            optimizer_state_bytes=states,
            activation_bytes=0,
            backward_share=float("nan"),
            assumptions=self.assumptions,
        )

    def line(self, counts: ParamCounts) -> tuple[str, str]:
        """(the line shown, its tooltip)."""
        estimate = self.estimate(counts)
        if estimate is None:
            return (
                "training memory: not estimated for this model",
                f"The cost estimate failed: {self.error}",
            )
        return estimate.summary(), "\n".join(self.assumptions)
