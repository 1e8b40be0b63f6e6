"""The one error a failed distributed run raises."""

from __future__ import annotations

__all__ = ["DistributedRunError"]


class DistributedRunError(RuntimeError):
    """A worker failed, was killed, or the run timed out; every worker process is gone.

    Attributes:
        rank: The global rank that failed first (None for a timeout or a launcher failure).
        cause: That rank's exception as ``"Type: message"`` (or the signal that killed it).
        log_tail: The last lines the launcher and workers printed, for details.
    """

    def __init__(self, message: str, *, rank: int | None, cause: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.cause = cause
        self.log_tail = log_tail
