"""``finetune``: the one fine-tune entry point, in this process or in several.

It sits above :mod:`freeze_widgets.training` (one process) and :mod:`freeze_widgets.distributed`
(several), validates the options once (:class:`~freeze_widgets.training.options.FineTuneOptions`)
and hands them to one of the two, so both reject the same bad argument with the same error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from freeze_widgets.base.checks import BnPolicy, require_module
from freeze_widgets.checks.preflight import RunStrategy
from freeze_widgets.data.synthetic import DEFAULT_IMAGE_SIZE
from freeze_widgets.distributed.runner import check_nproc, finetune_distributed
from freeze_widgets.training.loop import finetune_one_process
from freeze_widgets.training.options import FineTuneOptions
from freeze_widgets.training.report import FineTuneReport, StepEvent
from freeze_widgets.training.schedule import HEAD_THEN_ALL

__all__ = ["finetune"]


def finetune(
    model: nn.Module,
    data: Any = None,
    *,
    epochs: int = 1,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    num_classes: int | None = None,
    callback: Callable[[StepEvent], Any] | None = None,
    unfreeze_schedule: str | Sequence[Any] | dict[int, Any] | None = None,
    bn: BnPolicy | None = None,
    augment: bool = False,
    cache_features: bool | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    stop: threading.Event | None = None,
    nproc: int = 1,
    strategy: RunStrategy = "ddp",
    timeout_s: float = 600.0,
    lr_groups: dict[str, Any] | None = None,
) -> FineTuneReport:
    """Fine-tune the trainable part of ``model`` in place and verify the frozen part.

    Args:
        model: A classifier taking image batches; trained in place. Its train/eval mode is
            restored afterwards.
        data: None for :func:`synthetic_dataset` images; a dataset name, ``"digits"``
            (scikit-learn's offline 8x8 handwritten digits, training split, 3 channels at
            ``image_size``: :func:`freeze_widgets.data.digits.finetune_dataset`) or
            ``"synthetic"``; a Dataset or DataLoader yielding ``(inputs, labels)``; or an
            ImageFolder directory (resized to ``image_size``).
        epochs: Passes over the data.
        steps: Total optimizer steps; when given it overrides ``epochs`` (the data repeats
            as needed).
        batch_size: Used unless ``data`` is a DataLoader.
        lr: Learning rate of the parameters trainable at the start.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (momentum 0.9).
        num_classes: Classes of the task; if None, inferred from the dataset's ``classes``,
            ``num_classes`` or ``targets``, or by reading the labels of up to 10,000 items. A
            head with a different output size is replaced by a fresh, trainable ``nn.Linear``.
        callback: Called with a :class:`StepEvent` after every step; returning False stops.
        unfreeze_schedule: ``"gradual"`` unfreezes one more frozen top-level group per epoch,
            from the end of the model backwards, at ``lr / 2.6**k``; ``"head-then-all"``
            (fastai's ``fine_tune``) trains the head in epoch 1, then halves every rate and
            unfreezes all frozen top-level groups with rates spread geometrically from
            ``lr / 200`` (first group) to ``lr / 2`` (the planned rates:
            :func:`~freeze_widgets.training.schedule.describe_rates`); a list gives the
            group(s) for epochs 2, 3, ...; a dict maps 1-based epochs to group(s).
        bn: Re-apply this BatchNorm policy ("eval", "frozen", "train") to every fully frozen
            BatchNorm before training; None keeps the policies already set.
        augment: Random shifts and brightness jitter on the inputs.
        cache_features: Keep the frozen prefix's output after the first epoch and train later
            epochs on it. None means: when augment is off, a frozen prefix exists and
            ``epochs > 1``. Only used when the prefix is deterministic (no BatchNorm or
            dropout in train mode).
        image_size: Side of synthetic / ImageFolder images.
        seed: Seeds shuffling, augmentation and the new head.
        stop: A ``threading.Event``; when set, training stops after the current step and the
            model keeps what was trained. With ``nproc > 1`` it kills every worker at once and
            raises a ``DistributedRunError`` (``cause="stopped"``), the model unchanged.
        nproc: With more than 1, the same verified run happens in ``nproc`` local worker
            processes launched by PyTorch's elastic launcher (torchrun), and the report merges
            the ranks (:func:`freeze_widgets.distributed.finetune_distributed`): ``callback``
            gets rank 0's steps while they run (its return value is ignored), ``stop`` stops
            every rank at the same step; ``augment`` and ``cache_features`` are single-process
            only. At most one process per CPU core (per GPU with CUDA).
        strategy: With ``nproc > 1``: ``"ddp"`` (DistributedDataParallel) or ``"fsdp"``
            (FSDP2 ``fully_shard``).
        timeout_s: With ``nproc > 1``: every worker is stopped and an error raised when the
            run takes longer than this.
        lr_groups: Per-group learning rates for the parameters trainable at the start, as
            keywords of :func:`~freeze_widgets.training.param_groups.param_groups` with ``lr``
            as the top rate: ``{"layer_decay": 0.75}``, ``{"lr_mult": {"layer4": 0.1}}``,
            ``{"weight_decay": 0.05}``, ``{"spec": spec}``, or ``{"lr_min": 1e-5}`` for
            fastai's ``slice(lr_min, lr)``. Without ``weight_decay`` the optimizer's own
            default applies. Single process only.

    Returns:
        A :class:`FineTuneReport`; ``report.ok`` is True iff frozen weights and frozen
        "eval"/"frozen" BatchNorm statistics are bitwise unchanged.

    Raises:
        ValueError: nothing to train, bad arguments or data (labels outside ``num_classes``,
            inputs the model cannot take: one forward on one batch is tried first, and the
            model is left exactly as it was).
        TypeError: ``model`` is not an ``nn.Module``, an argument has the wrong type (named),
            or unsupported ``data``.
        NonFiniteLossError: the loss became NaN/inf (``exc.report`` holds the run so far).

    Example:
        >>> from torchvision.models import resnet18
        >>> from freeze_widgets import freeze
        >>> m = resnet18()
        >>> _ = freeze(m)
        >>> report = finetune(m, steps=2, num_classes=4)  # doctest: +SKIP
        >>> report.ok  # doctest: +SKIP
        True
    """
    require_module(model)
    if check_nproc(nproc) > 1:
        given = {
            "augment": augment,
            "cache_features": cache_features,
            "lr_groups": lr_groups,
            "unfreeze_schedule='head-then-all'": unfreeze_schedule == HEAD_THEN_ALL or None,
        }
        used = [name for name, value in given.items() if value not in (None, False)]
        if used:
            raise ValueError(f"{', '.join(used)}: single process only; drop them or use nproc=1")
        # finetune_distributed validates the same options with the same FineTuneOptions.
        return finetune_distributed(
            model, data, nproc=nproc, strategy=strategy, epochs=epochs, steps=steps,
            batch_size=batch_size, lr=lr, optimizer=optimizer, num_classes=num_classes,
            unfreeze_schedule=unfreeze_schedule, bn=bn, image_size=image_size, seed=seed,
            timeout_s=timeout_s, callback=callback, stop=stop,
        )  # fmt: skip
    options = FineTuneOptions.checked(
        epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, bn=bn,
        seed=seed,
    )  # fmt: skip
    return finetune_one_process(
        model, data, options, num_classes=num_classes, callback=callback,
        unfreeze_schedule=unfreeze_schedule, augment=augment, cache_features=cache_features,
        image_size=image_size, stop=stop, lr_groups=lr_groups,
    )  # fmt: skip
