"""Loss and accuracy per step as an inline SVG: crisp at any pixel ratio, coloured by the theme.

A raster plot is blurry when the browser scales it, and a white figure is a bright block in a
dark theme; an SVG drawn with JupyterLab's CSS variables avoids both. Step ticks are integers.
Colours go in ``style`` (CSS), not in presentation attributes, so ``var(...)`` is resolved.
"""

from __future__ import annotations

import html
import math

__all__ = ["integer_ticks", "plot_svg"]

WIDTH, HEIGHT = 520, 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 44, 22, 32
_TEXT = "var(--jp-ui-font-color1,#333)"
_MUTED = "var(--jp-ui-font-color2,#666)"
_GRID = "var(--jp-border-color2,#ddd)"
LOSS_COLOUR = "var(--jp-brand-color1,#1565c0)"
ACC_COLOUR = "var(--jp-success-color1,#2e7d32)"


def integer_ticks(last: int, most: int = 6) -> list[int]:
    """Integer ticks from 1 to ``last``: steps of 1, 2, 5, 10, 20, 50, ... (at most ``most``)."""
    if last < 1:
        return []
    step = 1
    while last // step > most:
        for factor in (2, 2.5, 2):  # 1 -> 2 -> 5 -> 10 -> 20 -> 50 -> ...
            step = int(step * factor)
            if last // step <= most:
                break
    return sorted({1, *range(step, last + 1, step)})


def _value_ticks(low: float, high: float) -> list[float]:
    """About four round values covering [low, high]."""
    span = high - low or abs(high) or 1.0
    raw = span / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step) * step
    return [start + i * step for i in range(int((high - start) / step + 1e-9) + 1)]


def _polyline(xs: list[float], ys: list[float], colour: str, label: str) -> str:
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return (
        f'<polyline class="{label}" style="fill:none;stroke:{colour}" stroke-width="1.5" '
        f'stroke-linejoin="round" points="{points}"/>'
    )


def _text(x: float, y: float, text: str, anchor: str, colour: str = _TEXT) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" style="fill:{colour}">'
        f"{html.escape(text)}</text>"
    )


def plot_svg(losses: list[float], accs: list[float]) -> str:
    """The curves as one ``<svg>`` element: loss on the left axis, accuracy (0-1) on the right.

    Args:
        losses: Training loss of each step.
        accs: Accuracy of each step's batch (same length as ``losses``).
    """
    n = len(losses)
    if n == 0:
        return ""
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    finite = [v for v in losses if math.isfinite(v)] or [0.0]
    low, high = min(0.0, *finite), max(finite) or 1.0

    def x_of(step: float) -> float:
        return _LEFT + (inner_w * (step - 1) / (n - 1) if n > 1 else inner_w / 2)

    def y_loss(value: float) -> float:
        value = value if math.isfinite(value) else high
        return _TOP + inner_h * (1 - (value - low) / ((high - low) or 1.0))

    def y_acc(value: float) -> float:
        return _TOP + inner_h * (1 - min(max(value, 0.0), 1.0))

    parts = [
        f'<svg class="fw-plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="loss and accuracy per step" style="font:11px var(--jp-ui-font-family,'
        f'sans-serif);color:{_TEXT};background:transparent">'
    ]
    for value in _value_ticks(low, high):
        y = y_loss(value)
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'style="stroke:{_GRID}" stroke-width="0.5"/>'
        )
        parts.append(_text(_LEFT - 4, y + 4, f"{value:.3g}", "end", LOSS_COLOUR))
    for value in (0.0, 0.5, 1.0):
        parts.append(
            _text(WIDTH - _RIGHT + 4, y_acc(value) + 4, f"{value:.0%}", "start", ACC_COLOUR)
        )
    for step in integer_ticks(n):
        x = x_of(step)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - _BOTTOM}" '
            f'y2="{HEIGHT - _BOTTOM + 4}" style="stroke:{_MUTED}"/>'
        )
        parts.append(_text(x, HEIGHT - _BOTTOM + 15, str(step), "middle", _MUTED))
    parts.append(_text(_LEFT + inner_w / 2, HEIGHT - 3, "step", "middle"))
    parts.append(_text(_LEFT, 13, "loss (each step)", "start", LOSS_COLOUR))
    parts.append(_text(WIDTH - _RIGHT, 13, "accuracy (each step's batch)", "end", ACC_COLOUR))
    steps = [float(i) for i in range(1, n + 1)]
    xs = [x_of(s) for s in steps]
    parts.append(_polyline(xs, [y_loss(v) for v in losses], LOSS_COLOUR, "fw-plot-loss"))
    accs = accs[:n]
    parts.append(_polyline(xs[: len(accs)], [y_acc(v) for v in accs], ACC_COLOUR, "fw-plot-acc"))
    parts.append("</svg>")
    return "".join(parts)
