"""A small, verified fine-tune loop: train what is trainable, prove the frozen part did not move.

:func:`finetune` trains a (partly frozen) classifier for a few epochs on offline synthetic images
(:func:`synthetic_dataset`), a Dataset, a DataLoader or an ImageFolder directory, and returns a
:class:`FineTuneReport` whose ``verification`` compares every parameter and every BatchNorm
buffer bitwise with a snapshot taken before training.

One job per module:

* :mod:`.data` synthetic images, class-count inference, loaders, batch splitting, augmentation;
* :mod:`.report` step / unfreeze events, verification rows, the report and its text;
* :mod:`.verify` the snapshot before training and the bitwise comparison after;
* :mod:`.schedule` gradual unfreezing (which group when, and adding it to the optimizer);
* :mod:`.prefix` the frozen prefix of a chain-like model, run without gradients and cached;
* :mod:`.head` the classification head and the optimizer table;
* :mod:`.modes` train/eval flags restored with BatchNorm following its policy;
* :mod:`.loop` :func:`finetune` itself.

The package is widget-free: the Jupyter panel lives in ``freeze_widgets.ui.finetune_panel``.
"""

from __future__ import annotations

# Names outside __all__ imported "as" themselves: public module-level names of the former single
# module that the UI and scripts import from here.
from .data import DEFAULT_IMAGE_SIZE as DEFAULT_IMAGE_SIZE
from .data import DEFAULT_SYNTHETIC_CLASSES as DEFAULT_SYNTHETIC_CLASSES
from .data import DEFAULT_SYNTHETIC_N as DEFAULT_SYNTHETIC_N
from .data import SyntheticShapes, synthetic_dataset
from .data import infer_num_classes as infer_num_classes
from .head import find_head
from .loop import finetune
from .prefix import MAX_CACHE_BYTES as MAX_CACHE_BYTES
from .prefix import find_chain as _find_chain  # noqa: F401  (tests check the chain split)
from .report import (
    FineTuneReport,
    NonFiniteLossError,
    StepEvent,
    UnfreezeEvent,
    VerificationRow,
)
from .schedule import ULMFIT_LR_FACTOR

__all__ = [
    "ULMFIT_LR_FACTOR",
    "FineTuneReport",
    "NonFiniteLossError",
    "StepEvent",
    "SyntheticShapes",
    "UnfreezeEvent",
    "VerificationRow",
    "find_head",
    "finetune",
    "synthetic_dataset",
]
