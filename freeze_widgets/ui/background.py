"""Background work for panels, and the one busy state that refuses model changes meanwhile.

Long work (training, export) runs in a daemon thread so it never blocks the notebook. While it
runs, the model must not change under it: every panel's work holds the explorer's ``BusyState``,
and every model-changing action of the explorer asks that state first (not a button's
``disabled`` flag, which only says what a widget shows).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["BackgroundWork", "BusyState"]


class BusyState:
    """Which long run (if any) holds the model: ``reason`` is None when the model is free."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._listeners: list[Callable[[str | None], None]] = []

    @property
    def reason(self) -> str | None:
        return self._reason

    def acquire(self, reason: str) -> bool:
        """Take the model for ``reason``; False (and nothing changes) if it is already taken."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
        self._notify()
        return True

    def release(self) -> None:
        with self._lock:
            self._reason = None
        self._notify()

    def observe(self, listener: Callable[[str | None], None]) -> None:
        """Call ``listener(reason)`` on every change (None when the model becomes free)."""
        self._listeners.append(listener)

    def clear_listeners(self) -> None:
        self._listeners.clear()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener(self._reason)


class BackgroundWork:
    """Mixin for panels: ``_start`` runs ``self._work`` in a daemon thread, one at a time.

    If ``busy`` is set (the explorer sets it), the run holds it from start to end, so the explorer
    refuses model changes meanwhile; ``busy_reason`` says why in the explorer's message line.
    """

    _thread: threading.Thread | None = None
    busy: BusyState | None = None
    busy_reason: str = "a background run is using the model"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current run (if any) has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _start(self, name: str, block: bool) -> bool:
        """Start the run; False if the model is busy with another run (nothing started)."""
        if self.busy is not None and not self.busy.acquire(self.busy_reason):
            return False
        self._thread = threading.Thread(target=self._run_holding_busy, name=name, daemon=True)
        self._thread.start()
        if block:
            self.wait()
        return True

    def _run_holding_busy(self) -> None:
        try:
            self._work()
        finally:
            if self.busy is not None:
                self.busy.release()

    def _work(self) -> None:
        raise NotImplementedError
