"""``export_onnx``: dynamo exporter with a TorchScript-exporter fallback, checker, onnxruntime.

The onnx and onnxruntime imports happen inside the functions that need them.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from freeze_widgets.base.wording import first_line
from freeze_widgets.export._common import (
    ExportJob,
    Loaded,
    VerifyOptions,
    Written,
    run_export,
)
from freeze_widgets.export.inputs import ExampleInputs, passes_positionally
from freeze_widgets.export.onnx_freeze import mark_freeze
from freeze_widgets.export.parity import ort_runner
from freeze_widgets.export.report import ExportReport

__all__ = ["OnnxExporter", "export_onnx"]

OnnxExporter = Literal["dynamo", "torchscript"]
"""The ONNX exporter asked for: ``"dynamo"`` (falls back to ``"torchscript"``) or forced legacy."""

_ONNX_EXPORTERS: tuple[OnnxExporter, ...] = get_args(OnnxExporter)

# Above this many parameter bytes the ONNX protobuf (2 GB limit) needs external data.
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def export_onnx(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    exporter: OnnxExporter = "dynamo",
    batch_axes: Mapping[str, int | None] | None = None,
    verify: bool = True,
    tolerance: float = 1e-4,
    verify_batches: Sequence[int] | None = None,
    timing_runs: int = 10,
    warmup: int = 2,
    timing: Literal["quick", "thorough", "off"] = "quick",
) -> ExportReport:
    """Export ``model`` to ONNX, check the file and compare onnxruntime with PyTorch.

    The dynamo exporter runs first (dynamic batch via ``dynamic_shapes``); if it fails, the
    TorchScript exporter runs and the report records dynamo's real error and what to try. The
    model is exported in eval mode and every submodule's train/eval flag is restored afterwards,
    also on error. ``torch.compile`` and (Distributed)DataParallel wrappers are looked through
    (noted in the report). The file carries the freeze: the FreezeSpec JSON in its metadata
    (key ``freeze_widgets.freezing.spec``) and "frozen"/"trainable" in each weight's ``doc_string``.

    Arguments are checked before anything is written; once the file is written nothing raises:
    a failed check or verification is ``report.error`` and ``report.ok`` is False.

    Args:
        model: The model, typically a :class:`BoundModule` from :func:`bind`.
        example_inputs: A tensor, a tuple of tensors (positional) or a dict name -> tensor.
        path: Output ``.onnx`` file; its parent directory is created if missing.
        dynamic_batch: Make the batch axis of every batched input (and axis 0 of outputs)
            dynamic.
        batch_axes: Input name -> its batch axis, or None for an input with no batch (kept
            static-shaped, e.g. ``{"mask": None}``). Inputs not named: axis 0 is the batch when
            its size is the example batch (the largest axis-0 size among them).
        opset: ONNX opset; None lets PyTorch choose.
        exporter: ``"dynamo"`` (with TorchScript fallback) or ``"torchscript"`` (forced).
        verify: Run onnxruntime against eager and time both.
        tolerance: Largest accepted ``max|diff| / max|eager|`` per output (scale-relative,
            docs/design.md trap 17); outputs too close to zero to judge fail.
        verify_batches: Batch sizes to verify at; default two sizes other than the traced one
            (1 and 3 when tracing at 2).
        timing_runs: Timed runs per latency figure (median reported).
        warmup: Untimed runs before timing.
        timing: ``"quick"`` (default): latency at the first verified batch size only, each
            engine timed in its own block right after the parity run on the same input (its
            warm-up), the blocks together capped at a tenth of the export's time (at least one
            run each), so verifying costs little next to exporting; ``"thorough"``: ``warmup`` then
            all ``timing_runs`` per block; ``"off"``: parity only. onnxruntime runs with as
            many threads as PyTorch and spin-waiting off (docs/design.md, trap 25).

    Returns:
        An :class:`ExportReport`; ``report.ok`` tells whether every check passed.
    """
    import onnx  # noqa: F401  (fail before any work when onnx is not installed)

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"export_onnx: model must be a torch.nn.Module; got {type(model).__name__} "
            "(wrap a functools.partial with bind(partial) first)"
        )
    if exporter not in _ONNX_EXPORTERS:
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', not {exporter!r}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int)):
        raise TypeError(f"opset must be an int or None; got {type(opset).__name__}")
    check = VerifyOptions(
        verify, tolerance, verify_batches, timing_runs, warmup, batch_axes=batch_axes, timing=timing
    )
    converter = _OnnxConverter(exporter, opset)
    return run_export(
        model, example_inputs, path, converter, dynamic_batch=dynamic_batch, check=check
    )


@dataclass(frozen=True)
class _OnnxConverter:
    """Writes an ``.onnx`` file (dynamo first unless forced) and reads it back with the checker."""

    exporter: OnnxExporter
    opset: int | None

    def write(self, job: ExportJob) -> Written:
        if self.exporter == "torchscript":
            _export_legacy(job, self.opset)
            return Written("onnx-torchscript")
        try:
            _export_dynamo(job, self.opset)
        except Exception as exc:  # any exporter failure -> documented fallback
            reason = dynamo_failure_reason(exc)
        else:
            return Written("onnx-dynamo")
        try:
            _export_legacy(job, self.opset)
        except Exception as exc:
            # Keep the first failure visible: it is usually the one worth fixing.
            raise RuntimeError(
                f"both ONNX exporters failed; dynamo: {reason}; torchscript: {first_line(exc)}"
            ) from exc
        return Written("onnx-torchscript", reason)

    def load(self, job: ExportJob, written: Written) -> Loaded:
        import onnx

        marked = mark_freeze(job.path, job.model, job.source)
        # A path (not a loaded proto) lets the checker handle models over 2 GB.
        onnx.checker.check_model(str(job.path))
        graph_inputs, n_init, opset, file_bytes = _graph_summary(job.path)
        return Loaded(graph_inputs, n_init, file_bytes, opset, lambda: ort_runner(job.path), marked)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASS = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>")
_FILE_LINE = re.compile(r'File "(?:.*/)?([^"/]+)", line (\d+)')
_DYNAMO_HINT = (
    "to export with dynamo: make forward traceable by torch.export (no Python branches on "
    "tensor values; bind non-tensor arguments), or pass exporter='torchscript'"
)


def _failure_site(lines: list[str]) -> str:
    """`` at file.py:N (code)`` from the "call raised this error" block, or ``""``."""
    for i, line in enumerate(lines[:-1]):
        if "raised this error" in line and (m := _FILE_LINE.search(lines[i + 1])):
            code = lines[i + 2] if i + 2 < len(lines) and lines[i + 2] else ""
            return f" at {m[1]}:{m[2]}" + (f" ({code})" if code else "")
    return ""


def dynamo_failure_reason(exc: BaseException) -> str:
    """The real error behind a dynamo export failure, on one line, plus what to try.

    ``torch.onnx.export`` wraps it in a generic "step 1/3" message with ANSI colour codes;
    the cause is the line after "## Exception summary", else the innermost chained exception.
    """
    text = _ANSI.sub("", str(exc))
    lines = [line.strip() for line in text.splitlines()]
    reason = ""
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1 :]
        reason = _CLASS.sub(r"\1", next((line for line in after if line), ""))
    if not reason:
        inner: BaseException = exc
        while inner.__cause__ is not None:
            inner = inner.__cause__
        reason = _ANSI.sub("", first_line(inner))
    return f"{reason}{_failure_site(lines)}; {_DYNAMO_HINT}"


def _graph_summary(path: Path) -> tuple[list[str], int, int | None, int]:
    """(graph inputs, initializer count, default-domain opset, total bytes incl. external data)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in proto.graph.initializer}
    # Older IR versions list initializers among the inputs; those are weights, not inputs.
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    external = {
        entry.value
        for init in proto.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    }
    total = path.stat().st_size
    for location in external:
        data_file = path.parent / location
        if data_file.exists():
            total += data_file.stat().st_size
    return inputs, len(initializers), opset, total


def _param_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _batch_axes(job: ExportJob) -> dict[str, Any]:
    """The batch axis of every batched input, named ``"batch"``."""
    return {name: {axis: "batch"} for name, axis in job.batch_axes.items() if axis is not None}


def _export_dynamo(job: ExportJob, opset: int | None) -> None:
    dynamic_shapes: dict[str, Any] | None = None
    if job.dynamic_batch:
        # Strings become Dim.DYNAMIC and the ONNX axis is renamed to "batch". torch.export
        # matches this dict against the forward's parameter names, which is why BoundModule
        # generates a forward with named parameters rather than ``*args``.
        axes = _batch_axes(job)
        dynamic_shapes = {name: axes.get(name) for name in job.inputs}
    with warnings.catch_warnings():
        # Inputs sharing the batch axis make the renamer note it skips duplicates: expected.
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
        torch.onnx.export(
            job.model,
            (),
            str(job.path),
            kwargs=dict(job.inputs),
            input_names=job.input_names,
            output_names=job.output_names,
            opset_version=opset,
            dynamo=True,
            verbose=False,  # its progress lines would clutter notebook output
            dynamic_shapes=dynamic_shapes,
            external_data=_param_bytes(job.model) > _EXTERNAL_DATA_THRESHOLD,
            # No report / dumps: they would be written to the current directory.
            report=False,
            verify=False,
            profile=False,
            dump_exported_program=False,
            optimize=True,
        )


def _export_legacy(job: ExportJob, opset: int | None) -> None:
    """The TorchScript-based ONNX exporter (``dynamo=False``)."""
    dynamic_axes: dict[str, Any] | None = None
    if job.dynamic_batch:
        dynamic_axes = _batch_axes(job)
        dynamic_axes.update({name: {0: "batch"} for name in job.output_names})
    # Positional when the inputs are the leading parameters (the legacy exporter's usual path),
    # keywords when an optional parameter in between was left out.
    positional = passes_positionally(job.model, job.inputs)
    with warnings.catch_warnings():
        # The legacy exporter warns that it is legacy; the report records which one ran.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            job.model,
            tuple(job.inputs.values()) if positional else (),
            str(job.path),
            kwargs=None if positional else dict(job.inputs),
            input_names=job.input_names,
            output_names=job.output_names,
            opset_version=opset,
            dynamo=False,
            dynamic_axes=dynamic_axes,
        )
