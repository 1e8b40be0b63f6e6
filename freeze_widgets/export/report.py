"""What an export produced and how well it matches PyTorch: the report and its formatting."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from freeze_widgets.base.wording import format_bytes

__all__ = ["ExportReport", "ExporterName", "ParityResult"]

ExporterName = Literal["onnx-dynamo", "onnx-torchscript", "torchscript-script", "torchscript-trace"]
"""Which exporter actually wrote the file (after any fallback)."""


@dataclass
class ParityResult:
    """Exported model vs PyTorch eager at one batch size."""

    batch: int
    max_abs: float
    max_rel: float  # max |diff| / max |eager|, worst output (docs/design.md, trap 17)
    ok: bool
    eager_ms: float
    exported_ms: float
    scale: float = float("nan")  # max |eager| of the smallest output
    too_small: bool = False  # outputs too close to zero for any comparison to mean something
    non_finite: bool = False  # the PyTorch outputs hold NaN/inf: nothing to compare against
    timed_runs: int = 0  # runs behind each latency median (0: not timed)


@dataclass
class ExportReport:
    """What an export produced and how well the exported model matches PyTorch.

    A parity entry is ok when ``max|diff| / max|eager|`` of every output is at most
    ``tolerance``: judged against the output's scale, since an absolute tolerance passes
    anything when outputs are tiny (docs/design.md, trap 17). ``max_abs`` is kept for reference.
    ``error`` says why checking or verifying a written file failed (the file stays).
    """

    path: Path
    exporter: ExporterName
    fallback_reason: str | None
    opset: int | None
    input_names: list[str]
    output_names: list[str]
    bound_names: list[str]
    graph_inputs: list[str]
    initializer_count: int
    file_bytes: int
    export_seconds: float
    parity: list[ParityResult] = field(default_factory=list)
    tolerance: float = 1e-4
    checker_ok: bool = True
    verified: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    freeze_marked: tuple[int, int] | None = None  # (frozen, trainable) initializers marked

    @property
    def atol(self) -> float:
        """The parity tolerance (scale-relative); the name older callers read."""
        return self.tolerance

    @property
    def bound_leaked(self) -> list[str]:
        """Bound argument names that wrongly appear as graph inputs (should be empty)."""
        return [n for n in self.bound_names if n in self.graph_inputs]

    @property
    def ok(self) -> bool:
        """Checker passed, every parity check passed, no bound name is a graph input."""
        return (
            self.checker_ok
            and self.error is None
            and self.verified
            and all(p.ok for p in self.parity)
            and not self.bound_leaked
        )

    def to_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a readable table."""
        rows = [("file", str(self.path)), ("exporter", self.exporter)]
        if self.fallback_reason:
            rows.append(("fallback reason", self.fallback_reason))
        rows += [("note", note) for note in self.notes]
        rows += [
            ("opset", "-" if self.opset is None else str(self.opset)),
            ("inputs", ", ".join(self.input_names) or "-"),
            ("graph inputs", ", ".join(self.graph_inputs) or "-"),
            ("bound", ", ".join(self.bound_names) or "-"),
            ("outputs", ", ".join(self.output_names) or "-"),
            ("initializers", self._initializers()),
            ("file size", format_bytes(self.file_bytes)),
            ("export time", f"{self.export_seconds:.2f} s"),
        ]
        for p in self.parity:
            rows += self._parity_rows(p)
        if not self.verified:
            rows.append(("verified", "no"))
        if self.bound_leaked:
            rows.append(("bound names in graph inputs", ", ".join(self.bound_leaked)))
        if self.error:
            rows.append(("error", self.error))
        rows.append(("status", "OK" if self.ok else "FAILED"))
        return rows

    def _initializers(self) -> str:
        """The count, and what the tensors stored in the file are (weights vs the rest)."""
        n = self.initializer_count
        if self.freeze_marked is None:
            return str(n)
        frozen, trainable = self.freeze_marked
        rest = max(n - frozen - trainable, 0)
        return (
            f"{n} tensors stored in the file: {frozen} frozen weights, {trainable} trainable "
            f"weights (marked so in the file), {rest} buffers and constants"
        )

    def _parity_rows(self, p: ParityResult) -> list[tuple[str, str]]:
        """The parity verdict and the latency comparison at one batch size."""
        runtime = "onnxruntime" if self.exporter.startswith("onnx") else "torchscript"
        ratio = p.exported_ms / p.eager_ms if p.eager_ms > 0 else float("nan")
        # Two decimals, or two significant digits below 0.1 ("0.00x" said nothing).
        shown = f"{ratio:.2f}" if not ratio < 0.1 else f"{ratio:.2g}"
        how = f" ({shown}x)"
        if p.timed_runs:
            how += f", each timed in its own block after warm-up, median of {p.timed_runs} runs"
        if p.non_finite:
            verdict = (
                "NOT JUDGEABLE: the PyTorch model's own outputs hold NaN or inf on these "
                "inputs; find where (weights holding NaN, a division by zero) and export again"
            )
        elif p.too_small:
            verdict = (
                f"TOO SMALL TO JUDGE: outputs at most {p.scale:.1e} in size "
                f"(max abs {p.max_abs:.2e}); check with trained weights or real inputs"
            )
        else:
            verdict = (
                f"{'ok' if p.ok else 'MISMATCH'}: max rel {p.max_rel:.2e} of output scale "
                f"(tolerance {self.tolerance:g}), max abs {p.max_abs:.2e}"
            )
        return [
            (f"parity @ batch {p.batch}", verdict),
            (
                f"latency @ batch {p.batch}",
                f"eager {p.eager_ms:.2f} ms, {runtime} {p.exported_ms:.2f} ms{how}"
                if p.eager_ms == p.eager_ms  # NaN: not timed
                else "not timed (timing='thorough' times every batch size)",
            ),
        ]

    def __str__(self) -> str:
        rows = self.to_rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
            for label, value in self.to_rows()
        )
        return f"<table class='freeze-widgets-export-report'>{body}</table>"
