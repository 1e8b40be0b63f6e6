"""One background thread per panel, so long work (training, export) never blocks the notebook."""

from __future__ import annotations

import threading

__all__ = ["BackgroundWork"]


class BackgroundWork:
    """Mixin for panels: ``_start`` runs ``self._work`` in a daemon thread, one at a time."""

    _thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current run (if any) has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _start(self, name: str, block: bool) -> None:
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        if block:
            self.wait()

    def _work(self) -> None:
        raise NotImplementedError
