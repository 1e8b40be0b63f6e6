"""``Finding``: one problem a preflight check found, with where it is and how to fix it.

Shared by the checks that look at a model before training (``check_distributed``) and at an
optimizer (``audit_optimizer``), so the explorer and scripts render them one way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One problem found before (or during) training.

    Attributes:
        kind: A stable machine-readable name, e.g. ``"unused_trainable"``.
        path: The dotted module or parameter path it concerns ("" for the whole model).
        message: What is wrong, in one sentence.
        fix: What to do about it, in one sentence.
    """

    kind: str
    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f" [{self.path}]" if self.path else ""
        return f"{self.kind}{where}: {self.message} Fix: {self.fix}"


def format_findings(findings: Iterable[Finding]) -> str:
    """One line per finding, or a line saying there is nothing to report."""
    lines = [f"- {f}" for f in findings]
    return "\n".join(lines) if lines else "No findings."
