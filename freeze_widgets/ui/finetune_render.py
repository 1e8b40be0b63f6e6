"""The fine-tune panel's pure renderers: verification table, figures, preflight, data line.

Plain functions from reports to HTML, testable without widgets.
"""

from __future__ import annotations

import html
import os
from typing import Any

from freeze_widgets.checks.findings import Finding
from freeze_widgets.data.synthetic import DEFAULT_SYNTHETIC_N
from freeze_widgets.training import FineTuneReport, VerificationRow

__all__ = [
    "data_description",
    "figures_html",
    "findings_html",
    "finish_line",
    "verification_html",
]

_GREEN = "var(--jp-success-color1,#2e7d32)"
_RED = "var(--jp-error-color1,#c62828)"
_AMBER = "var(--jp-warn-color1,#ef6c00)"


_CELL = "padding:2px 10px 2px 0;text-align:left;vertical-align:top"


def _row_html(row: VerificationRow, colour: str) -> str:
    change = f"{row.max_abs_change:.3g}" if row.changed else "0"
    note = f" ({html.escape(row.note)})" if row.note else ""
    cells = [
        f"<code>{html.escape(row.name)}</code>",
        row.kind,
        "frozen" if row.was_frozen else "trainable",
        change,
        f"{html.escape(row.status)}{note}",
    ]
    tds = "".join(f'<td style="{_CELL}">{cell}</td>' for cell in cells)
    return f'<tr style="color:{colour}">{tds}</tr>'


def _table(rows: list[str]) -> str:
    # Padded, left-aligned cells: headers sit over their values ("parameterfrozen0" before).
    names = ("tensor", "kind", "was", "max |change|", "status")
    head = "<tr>" + "".join(f'<th style="{_CELL}">{n}</th>' for n in names) + "</tr>"
    return (
        '<table class="fw-verify-table" style="border-collapse:collapse;font-size:0.85em">'
        + head
        + "".join(rows)
        + "</table>"
    )


def verification_html(report: FineTuneReport) -> str:
    """Summary lines, then the offending rows in red, or all frozen rows green behind a toggle."""
    verdict_colour = _GREEN if report.ok else _RED
    lines = "<br>".join(html.escape(line) for line in report.verification_lines())
    parts = [
        f'<div class="fw-verify"><div style="color:{verdict_colour};font-weight:600">'
        f"{'&#10004;' if report.ok else '&#10008;'} {lines}</div>"
    ]
    moved = report.moved
    silent = report.no_gradient_path
    if moved or silent:
        rows = [_row_html(r, _RED) for r in moved] + [_row_html(r, _AMBER) for r in silent]
        parts.append(_table(rows))
    frozen = [r for r in report.verification if r.was_frozen and r.status != "MOVED"]
    if frozen:
        unchanged = sum(1 for r in frozen if not r.changed)
        parts.append(
            f"<details><summary>{len(frozen)} frozen tensors checked, {unchanged} bitwise "
            f"unchanged</summary>"
            + _table([_row_html(r, _GREEN if not r.changed else _AMBER) for r in frozen])
            + "</details>"
        )
    parts.append("</div>")
    return "".join(parts)


def figures_html(report: FineTuneReport) -> str:
    """The run's figures as a small two-column table."""
    epochs = f"{report.epochs} epoch{'' if report.epochs == 1 else 's'}"
    items: list[tuple[str, str]] = [
        ("steps", f"{report.steps} of {report.total_steps} ({epochs})"),
        ("samples/s", f"{report.samples_per_second:.1f}"),
        ("time", f"{report.total_seconds:.1f} s"),
    ]
    # The plot shows each step's batch; the epoch figures average a whole epoch: say which.
    if report.final_loss is not None:
        items.append(("loss, last step", f"{report.final_loss:.4g}"))
    if report.step_acc:
        items.append(("accuracy, last step's batch", f"{report.step_acc[-1]:.1%}"))
    if report.final_acc is not None:
        last = len(report.epoch_acc)
        items.append((f"accuracy, mean over epoch {last}", f"{report.final_acc:.1%}"))
    items.append(("head", report.head_replaced or "kept"))
    items.append(("BatchNorm policy", report.bn_policy))
    if report.frozen_prefix:
        items.append(("no_grad prefix", ", ".join(report.frozen_prefix)))
    if report.cached_epochs:
        items.append(("cached-feature epochs", ", ".join(map(str, report.cached_epochs))))
    for event in report.unfreeze_events:
        items.append((f"epoch {event.epoch}", f"unfroze {event.group} (lr {event.lr:.3g})"))
    if report.stopped_early:
        items.append(("stopped", report.stop_reason or "early"))
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in items)
    return f'<table class="fw-finetune-figures" style="font-size:0.85em">{rows}</table>'


def findings_html(findings: list[Finding]) -> str:
    """The preflight's findings before a multi-process run (what DDP would trip over)."""
    if not findings:
        return "<small>Preflight for DDP: no findings.</small>"
    items = "".join(
        f"<li><b>{html.escape(f.kind)}</b>"
        + (f" <code>{html.escape(f.path)}</code>" if f.path else "")
        + f": {html.escape(f.message)} <i>Fix:</i> {html.escape(f.fix)}</li>"
        for f in findings
    )
    return f"<small>Preflight for DDP ({len(findings)} findings):</small><ul>{items}</ul>"


def data_description(data: Any, num_classes: int, image_size: int) -> str:
    """What a run trains on, in one line (synthetic shapes unless a dataset was given)."""
    if data is None or data == "synthetic":
        return (
            f"Data: synthetic shapes ({DEFAULT_SYNTHETIC_N} generated {image_size}x{image_size} "
            f"images of stripes, discs, squares, rings..., {num_classes} classes), not your "
            "data. To train on yours: type digits or an ImageFolder path in the data field, or "
            "pass data= (a Dataset, a DataLoader, a folder) to explore(model, data=...)."
        )
    if data == "digits":
        return (
            "Data: scikit-learn's 8x8 handwritten digits (offline, training split, 10 classes), "
            f"upscaled to {image_size}x{image_size}"
        )
    if isinstance(data, str | os.PathLike):
        return f"Data: the image folder {os.fspath(data)} (resized to {image_size}px)"
    size = f", {len(data)} items" if hasattr(data, "__len__") else ""
    return f"Data: the {type(data).__name__} you passed{size}"


def finish_line(report: FineTuneReport, waited: float, nproc: int) -> str:
    """How the run ended, with the time the user waited (worker start-up named apart)."""
    head = (
        f"stopped after {report.steps} of {report.total_steps} steps"
        if report.stopped_early
        else f"done: {report.steps} steps"
    )
    if nproc <= 1:
        return f"{head} in {waited:.1f} s"
    start_up = max(waited - report.total_seconds, 0.0)
    return (
        f"{head} in {waited:.1f} s ({start_up:.1f} s starting and checking {nproc} worker "
        f"processes, {report.total_seconds:.1f} s training)"
    )
