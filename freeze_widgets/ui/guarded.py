"""Refusals and guarded handlers: a UI action fails as one line in the explorer, never a trace."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from freeze_widgets.ui.staleness import ModelChanged

__all__ = ["ModelBusy", "guarded"]

F = TypeVar("F", bound=Callable[..., Any])


class ModelBusy(RuntimeError):
    """A model-changing action was refused because a fine-tune or export holds the model."""


def guarded(context: str) -> Callable[[F], F]:
    """Show any error of a UI handler as one line in the message area, then resync the view.

    Exceptions inside widget callbacks are otherwise only logged, invisible in the notebook.
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except (ModelBusy, ModelChanged) as exc:
                self.messages.refuse(f"{context} refused: {exc}")
            except Exception as exc:
                self.messages.error(exc, context)
            self._resync()
            return None

        return run  # type: ignore[return-value]

    return wrap
