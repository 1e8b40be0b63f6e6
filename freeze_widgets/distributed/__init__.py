"""Distributed training of a frozen model (DDP and FSDP2), verified on every rank.

* :func:`check_distributed`: a preflight of the freeze against DDP / FSDP pitfalls;
* :func:`finetune_distributed`: the verified demo fine-tune in ``nproc`` local worker
  processes started by PyTorch's elastic launcher (torchrun);
* ``python -m freeze_widgets finetune ...``: the same run from a spec file, under torchrun.
"""

from __future__ import annotations

from freeze_widgets.checks.preflight import STRATEGIES, check_distributed
from freeze_widgets.distributed.errors import DistributedRunError
from freeze_widgets.distributed.report import DistributedFineTuneReport, RankVerdict
from freeze_widgets.distributed.runner import finetune_distributed

__all__ = [
    "STRATEGIES",
    "DistributedFineTuneReport",
    "DistributedRunError",
    "RankVerdict",
    "check_distributed",
    "finetune_distributed",
]
