"""``python -m freeze_widgets finetune ...`` (see :mod:`freeze_widgets.distributed.cli`)."""

from __future__ import annotations

import sys

from .distributed.cli import main

if __name__ == "__main__":
    sys.exit(main())
