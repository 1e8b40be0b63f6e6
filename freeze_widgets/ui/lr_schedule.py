"""The fine-tune panel's schedule picker, with its planned learning rates shown before the run."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
from torch import nn

from freeze_widgets.base.wording import one_line
from freeze_widgets.training.schedule import (
    HEAD_THEN_ALL,
    describe_rates,
    resolve_schedule,
    schedule_rates,
)

__all__ = ["ScheduleControl"]

_CHOICES: list[tuple[str, str | None]] = [
    ("no unfreezing", None),
    ("gradual (ULMFiT, lr / 2.6 per group)", "gradual"),
    ("head, then all (fastai fine_tune)", HEAD_THEN_ALL),
]


class ScheduleControl(widgets.VBox):
    """A dropdown of unfreeze schedules and, under it, the rates the chosen one plans."""

    def __init__(self, **kwargs: Any) -> None:
        self.choice = widgets.Dropdown(
            options=_CHOICES,
            value=None,
            description="schedule",
            style={"description_width": "initial"},
        )
        self.choice.add_class("fw-finetune-schedule")
        self.plan = widgets.HTML("")
        self.plan.add_class("fw-finetune-lr-plan")
        super().__init__([self.choice, self.plan], **kwargs)

    @property
    def value(self) -> str | None:
        return self.choice.value  # type: ignore[no-any-return]

    def show_plan(self, model: nn.Module, lr: float, epochs: int) -> None:
        """Write the planned rates (or why the schedule cannot run) under the dropdown."""
        if self.value is None:
            self.plan.value = ""
            return
        try:
            resolved = resolve_schedule(model, self.value, epochs)
            text = describe_rates(self.value, schedule_rates(model, self.value, resolved, lr), lr)
        except (TypeError, ValueError) as exc:
            text = one_line(exc)
        self.plan.value = f'<pre style="font-size:0.85em">{html.escape(text)}</pre>'
