"""A small, verified fine-tune loop: train what is trainable, prove the frozen part did not move.

:func:`finetune_one_process` trains a (partly frozen) classifier for a few epochs on offline
synthetic images, a Dataset, a DataLoader or an ImageFolder directory, and returns a
:class:`FineTuneReport` whose ``verification`` compares every parameter and every BatchNorm
buffer bitwise with a snapshot taken before training.

One job per module:

* :mod:`.report` step / unfreeze events, verification rows, the report and its text;
* :mod:`.schedule` gradual unfreezing (which group when, and adding it to the optimizer);
* :mod:`.prefix` the frozen prefix of a chain-like model, run without gradients and cached;
* :mod:`.head` the classification head and the optimizer table;
* :mod:`.options` the validated options and the one steps/epochs planner;
* :mod:`.loop` the single-process run (``freeze_widgets.finetune`` chooses it or several).

The package is widget-free: the Jupyter panel lives in ``freeze_widgets.ui.finetune_panel``.
"""

from __future__ import annotations

from freeze_widgets.training.head import find_head
from freeze_widgets.training.loop import finetune_one_process
from freeze_widgets.training.report import (
    FineTuneReport,
    NonFiniteLossError,
    StepEvent,
    UnfreezeEvent,
    VerificationRow,
)
from freeze_widgets.training.schedule import ULMFIT_LR_FACTOR

__all__ = [
    "ULMFIT_LR_FACTOR",
    "FineTuneReport",
    "NonFiniteLossError",
    "StepEvent",
    "UnfreezeEvent",
    "VerificationRow",
    "find_head",
    "finetune_one_process",
]
