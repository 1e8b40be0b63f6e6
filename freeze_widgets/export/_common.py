"""The one skeleton both exporters share, and the input handling it needs.

check arguments -> unwrap the model -> normalise inputs -> eval mode -> write the file (timed)
-> load it back -> report -> parity. An exporter supplies only a :class:`Converter`: how to
write its file and how to read it back. Nothing raises once the file is written: a failed check
or verification is the report's ``error``.
"""

from __future__ import annotations

import inspect
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from freeze_widgets.base.modules import preserved_modes
from freeze_widgets.base.wording import first_line
from freeze_widgets.cost.meta_forward import meta_copy, to_meta
from freeze_widgets.export.binding import BoundModule, PositionalInputs, unwrap_model
from freeze_widgets.export.defaults import unexportable_output
from freeze_widgets.export.inputs import (
    ExampleInputs,
    normalize_inputs,
    output_names,
    resolve_batch_axes,
    trace_inputs,
)
from freeze_widgets.export.parity import (
    Runner,
    Timing,
    attach_parity,
    batch_of,
    default_batches,
    flatten,
)
from freeze_widgets.export.report import ExporterName, ExportReport

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class ExportJob:
    """What a converter works on: the model (in eval mode), trace inputs and the names to use."""

    model: nn.Module
    inputs: dict[str, Any]
    path: Path
    input_names: list[str]
    output_names: list[str]
    dynamic_batch: bool
    batch_axes: dict[str, int | None]
    source: nn.Module  # the user's model inside any bind / wrapper: whose freeze to record


@dataclass(frozen=True)
class Written:
    """Which exporter wrote the file, and why it fell back if it did."""

    exporter: ExporterName
    fallback_reason: str | None = None


@dataclass(frozen=True)
class Loaded:
    """The written file read back: its graph and a way to run it."""

    graph_inputs: list[str]
    initializer_count: int
    file_bytes: int
    opset: int | None
    make_runner: Callable[[], Runner]  # called only when verifying
    freeze_marked: tuple[int, int] | None = None


class Converter(Protocol):
    """One export format: write the file (this step is timed), then read it back."""

    def write(self, job: ExportJob) -> Written: ...

    def load(self, job: ExportJob, written: Written) -> Loaded: ...


TIMING_CHOICES = ("quick", "thorough", "off")
# The quick timing spends at most this share of the export's own time on latency figures, so
# an export with its default verification costs about 1.3x a plain torch.onnx.export.
_QUICK_TIMING_SHARE = 0.1


@dataclass(frozen=True)
class VerifyOptions:
    """How the exported model is compared with PyTorch eager."""

    verify: bool
    tolerance: float
    batches: Sequence[int] | None
    timing_runs: int
    warmup: int
    batch_axes: Mapping[str, int | None] | None = None
    timing: str = "quick"  # "quick" (budgeted), "thorough" (every run) or "off"

    def __post_init__(self) -> None:
        if self.timing not in TIMING_CHOICES:
            raise ValueError(
                f"timing must be one of {', '.join(map(repr, TIMING_CHOICES))}; got {self.timing!r}"
            )
        if not isinstance(self.verify, bool):
            raise TypeError(f"verify must be True or False; got {type(self.verify).__name__}")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, int | float):
            raise TypeError(f"tolerance must be a number; got {type(self.tolerance).__name__}")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be positive; got {self.tolerance}")
        for name in ("timing_runs", "warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TypeError(f"{name} must be an int >= 0; got {value!r}")
        batches = self.batches
        if batches is not None and (
            isinstance(batches, str | bytes)
            or not isinstance(batches, Sequence)
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in batches)
        ):
            raise TypeError(f"verify_batches must be a sequence of positive ints; got {batches!r}")
        if self.batch_axes is not None and not isinstance(self.batch_axes, Mapping):
            raise TypeError(
                "batch_axes must be a dict input name -> batch axis (or None for an input "
                f"without a batch); got {type(self.batch_axes).__name__}"
            )


def check_path(path: object) -> Path:
    """``path`` as a Path, or a TypeError naming the argument."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    return Path(path)


def prepare_model(model: object, example_inputs: ExampleInputs) -> tuple[nn.Module, list[str]]:
    """The module to export: wrappers looked through, a ``forward(*args)`` given named inputs."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module; got {type(model).__name__} "
            "(wrap a functools.partial with bind(partial) first)"
        )
    module, notes = unwrap_model(model)
    if isinstance(module, BoundModule):
        notes = [*module.unwrapped, *notes]
        return module, notes
    params = list(inspect.signature(module.forward).parameters.values())
    var = next((p for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    if var is not None and isinstance(example_inputs, Mapping):
        positional = {p.name for p in params if p.kind in _POSITIONAL}
        loose = [k for k in example_inputs if k not in positional]
        if loose:
            raise ValueError(
                f"forward(*{var.name}) takes its inputs by position, so example_inputs as a "
                f"dict cannot say where {loose} go: pass a tuple in call order (or one tensor)"
            )
    if var is None or not isinstance(example_inputs, torch.Tensor | tuple | list):
        return module, notes
    values = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    named = [p.name for p in params if p.kind in _POSITIONAL and p.default is p.empty]
    extra = [f"{var.name}_{i}" for i in range(len(values) - len(named))]
    return PositionalInputs(module, [*named, *extra]), notes


def source_model(model: nn.Module) -> nn.Module:
    """The user's model inside a BoundModule / PositionalInputs (whose paths the user knows)."""
    while isinstance(model, BoundModule | PositionalInputs):
        model = model.model
    return model


def run_export(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | os.PathLike[str],
    converter: Converter,
    *,
    dynamic_batch: bool,
    check: VerifyOptions,
) -> ExportReport:
    """Export ``model`` with ``converter`` in eval mode; every submodule's flag is restored.

    Per-module restore keeps a BatchNorm the user froze in eval inside a training model in eval
    (docs/design.md, trap 1), also when the export raises. Arguments are checked before
    anything is written; once the file exists, failures end up in the report, not raised.
    """
    module, notes = prepare_model(model, example_inputs)
    path = check_path(path)
    if not isinstance(dynamic_batch, bool):
        raise TypeError(f"dynamic_batch must be True or False; got {type(dynamic_batch).__name__}")
    inputs = normalize_inputs(module, example_inputs)
    axes = resolve_batch_axes(inputs, check.batch_axes)
    with preserved_modes(module, eval_inside=True):
        traced = trace_inputs(inputs, axes) if dynamic_batch else dict(inputs)
        example_output = _outputs_on(module, traced)  # before any folder or file is made
        source = source_model(module)
        problem = unexportable_output(example_output, inspect.signature(source.forward))
        if problem is not None:  # before any exporter prints a page about pytrees
            raise ValueError(problem)
        n_outputs = len(flatten(example_output))
        created = _first_missing(path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        job = ExportJob(
            module,
            traced,
            path,
            list(inputs),
            output_names(n_outputs),
            dynamic_batch,
            axes,
            source,
        )
        start = time.perf_counter()
        try:
            written = converter.write(job)
        except BaseException:
            if created is not None:  # the folder this call made, and only that
                shutil.rmtree(created, ignore_errors=True)
            raise
        export_seconds = time.perf_counter() - start
        report = _empty_report(job, written, export_seconds, check, notes)
        stage = ["reading the file back"]
        try:
            _check_and_verify(report, converter, job, written, inputs, check, stage)
        except Exception as exc:  # the file is written: report the failure, never raise
            report.error = f"{stage[-1]} failed: {first_line(exc, limit=300)}"
            report.error += _bound_batch_hint(job)
    return report


def _outputs_on(module: nn.Module, inputs: dict[str, Any]) -> Any:
    """What one forward on ``inputs`` returns (its structure); a failure is named, not raw."""
    try:
        with torch.inference_mode():
            return _example_output(module, inputs)
    except Exception as exc:
        shapes = {n: tuple(v.shape) for n, v in inputs.items() if isinstance(v, torch.Tensor)}
        raise ValueError(
            f"the model's forward failed on example_inputs {shapes}: "
            f"{first_line(exc, limit=300)}. Nothing was written; check example_inputs (shapes, "
            "dtypes) or bind the non-tensor arguments with bind(model, ...)"
        ) from exc


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (None: all do)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _example_output(module: nn.Module, inputs: dict[str, Any]) -> Any:
    """What the model returns (its structure: names, types, count), for the output names and
    the check for outputs no graph can return.

    A meta-device copy answers without computing anything, so verifying costs less next to the
    export; a model that cannot run on meta (a Python branch on a tensor's value) runs for real.
    """
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    try:
        return meta_copy(module, dtype)(**to_meta(inputs, dtype))
    except Exception:  # data-dependent code needs real values: the plain forward
        return module(**inputs)


def _bound_batch_hint(job: ExportJob) -> str:
    """What to do when bound tensors cannot follow the exported batch size.

    A bound tensor with the traced batch size keeps it at every batch; one of size 1
    broadcast against the batch (BERT's ``attention_mask=ones(1, L)``) can make the graph
    index it at rows it does not have. Either way the fix is to make it an input.
    """
    if not isinstance(job.model, BoundModule) or not job.dynamic_batch:
        return ""
    batch = batch_of(job.inputs, job.batch_axes)
    if batch is None or batch < 2:
        return ""
    tensors = {
        name: value
        for name, value in job.model.bound.items()
        if isinstance(value, torch.Tensor) and value.dim() > 0
    }
    fixed = [name for name, value in tensors.items() if value.shape[0] == batch]
    if fixed:
        return (
            f"; bound tensor(s) {fixed} have the batch size {batch} on axis 0 and keep it at "
            "every batch: bind them with size 1 on that axis, pass them as inputs, or export "
            "with dynamic_batch=False"
        )
    broadcast = [name for name, value in tensors.items() if value.shape[0] == 1]
    if broadcast:
        return (
            f"; bound tensor(s) {broadcast} have size 1 on axis 0 and are broadcast against the "
            f"batch of {batch}, which the exported graph may not do at other batch sizes: pass "
            "them in example_inputs instead of binding them, or export with dynamic_batch=False"
        )
    return ""


def _empty_report(
    job: ExportJob, written: Written, seconds: float, check: VerifyOptions, notes: list[str]
) -> ExportReport:
    """The report before the file is read back: what was asked for and what was written."""
    model = job.model
    return ExportReport(
        path=job.path,
        exporter=written.exporter,
        fallback_reason=written.fallback_reason,
        opset=None,
        input_names=job.input_names,
        output_names=job.output_names,
        bound_names=list(model.bound) if isinstance(model, BoundModule) else [],
        graph_inputs=[],
        initializer_count=0,
        file_bytes=job.path.stat().st_size if job.path.exists() else 0,
        export_seconds=seconds,
        tolerance=check.tolerance,
        notes=notes,
    )


def _check_and_verify(
    report: ExportReport,
    converter: Converter,
    job: ExportJob,
    written: Written,
    inputs: dict[str, Any],
    check: VerifyOptions,
    stage: list[str],
) -> None:
    """Read the file back into ``report``, then compare it with eager if asked to.

    ``stage`` gets the name of each step as it starts, for the error message.
    """
    report.checker_ok = False  # until load() returns
    loaded = converter.load(job, written)
    report.checker_ok = True
    report.opset = loaded.opset
    report.graph_inputs = loaded.graph_inputs
    report.initializer_count = loaded.initializer_count
    report.file_bytes = loaded.file_bytes
    report.freeze_marked = loaded.freeze_marked
    if not job.output_names:
        report.error = (
            "the model returned no tensors (None or no tensor in its output), so the exported "
            "graph has no outputs: return the tensors to export"
        )
        return
    if check.verify:
        stage.append("comparing with PyTorch eager")
        trace_batch = batch_of(job.inputs, job.batch_axes)
        batches = check.batches or default_batches(trace_batch, job.dynamic_batch)
        timing = _timing(check, report.export_seconds)
        attach_parity(
            report, loaded.make_runner(), job.model, inputs, job.batch_axes, batches, timing
        )


def _timing(check: VerifyOptions, export_seconds: float) -> Timing:
    """The latency plan: budgeted blocks by default, every run when thorough, none when off."""
    if check.timing == "off":
        return Timing(0, 0)
    if check.timing == "thorough":
        return Timing(check.timing_runs, check.warmup)
    # The first batch size only, one block per engine, no extra warm-up (the parity check has
    # just run both engines on the same feed): a cheap, honest figure; "thorough" times all.
    budget = max(_QUICK_TIMING_SHARE * export_seconds / 2, 0.01)
    return Timing(check.timing_runs, 0, budget, batches=1)
