"""Train/eval flags across a run: restore them per module, with BatchNorm following its policy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from freeze_widgets.base.modules import module_modes
from freeze_widgets.freezing.bn import bn_state, is_batchnorm

__all__ = ["modes_restored", "restore_modes_by_policy"]


def restore_modes_by_policy(modes: dict[nn.Module, bool], model: nn.Module) -> None:
    """Put every module back in the mode it had (flags set directly: ``.train()`` recurses).

    Args:
        modes: Flags saved by :func:`freeze_widgets.base.modules.module_modes` before the run.
        model: The model, possibly with modules swapped or added since.

    Modules added meanwhile (a new head, a FrozenBatchNorm) take their parent's mode; a
    BatchNorm under the "eval"/"frozen" policy stays in eval whatever it was before, and one
    released during the run follows its parent (docs/design.md, trap 1).
    """
    restored: dict[str, bool] = {}
    for path, mod in model.named_modules():
        parent = restored.get(path.rpartition(".")[0], modes.get(model, True))
        mode = modes.get(mod, parent)
        if is_batchnorm(mod):
            # A policy decides: frozen ones stay in eval, released ones (gradual unfreezing)
            # follow their parent instead of the eval mode they had while frozen.
            mode = parent if bn_state(mod) == "train" else False
        mod.training = mode
        restored[path] = mode


@contextlib.contextmanager
def modes_restored(model: nn.Module) -> Iterator[None]:
    """Run a block, then restore every module's mode with :func:`restore_modes_by_policy`."""
    modes = module_modes(model)
    try:
        yield
    finally:
        restore_modes_by_policy(modes, model)
