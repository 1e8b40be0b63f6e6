"""``python -m freeze_widgets finetune ...`` (see :mod:`freeze_widgets.cli`)."""

from __future__ import annotations

import sys

from freeze_widgets.cli import main

if __name__ == "__main__":
    sys.exit(main())
