"""The one skeleton both exporters share, and the input handling it needs.

normalise inputs -> eval mode -> write the file (timed) -> load it back -> report -> parity.
An exporter supplies only a :class:`Converter`: how to write its file and how to read it back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .._helpers import named_parameters_of, preserved_modes
from .binding import BoundModule
from .parity import Runner, attach_parity, batch_of, default_batches, flatten
from .report import ExporterName, ExportReport

ExampleInputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor] | Mapping[str, Any]


@dataclass(frozen=True)
class ExportJob:
    """What a converter works on: the model (in eval mode), trace inputs and the names to use."""

    model: nn.Module
    inputs: dict[str, Any]
    path: Path
    input_names: list[str]
    output_names: list[str]
    dynamic_batch: bool


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


class Converter(Protocol):
    """One export format: write the file (this step is timed), then read it back."""

    def write(self, job: ExportJob) -> Written: ...

    def load(self, job: ExportJob, written: Written) -> Loaded: ...


@dataclass(frozen=True)
class VerifyOptions:
    """How the exported model is compared with PyTorch eager."""

    verify: bool
    atol: float
    rtol: float
    batches: Sequence[int] | None
    timing_runs: int
    warmup: int


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
    (docs/design.md, trap 1), also when the export raises.
    """
    inputs = normalize_inputs(model, example_inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with preserved_modes(model, eval_inside=True):
        traced = trace_inputs(inputs, dynamic_batch)
        with torch.inference_mode():
            n_outputs = len(flatten(model(**traced)))
        job = ExportJob(model, traced, path, list(inputs), output_names(n_outputs), dynamic_batch)
        start = time.perf_counter()
        written = converter.write(job)
        export_seconds = time.perf_counter() - start
        loaded = converter.load(job, written)
        report = ExportReport(
            path=path,
            exporter=written.exporter,
            fallback_reason=written.fallback_reason,
            opset=loaded.opset,
            input_names=job.input_names,
            output_names=job.output_names,
            bound_names=list(model.bound) if isinstance(model, BoundModule) else [],
            graph_inputs=loaded.graph_inputs,
            initializer_count=loaded.initializer_count,
            file_bytes=loaded.file_bytes,
            export_seconds=export_seconds,
            atol=check.atol,
            rtol=check.rtol,
        )
        if check.verify:
            batches = check.batches or default_batches(batch_of(traced), dynamic_batch)
            run = loaded.make_runner()
            attach_parity(report, run, model, inputs, batches, check.timing_runs, check.warmup)
    return report


def input_param_names(model: nn.Module) -> list[str]:
    """The names a model's forward takes as inputs (a BoundModule's unbound ones)."""
    if isinstance(model, BoundModule):
        return list(model.input_names)
    return [p.name for p in named_parameters_of(model.forward)]


def normalize_inputs(model: nn.Module, example_inputs: ExampleInputs) -> dict[str, Any]:
    """Example inputs as an ordered name -> value dict, in the forward's parameter order."""
    names = input_param_names(model)
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        unknown = [n for n in example_inputs if n not in names]
        if unknown:
            raise ValueError(f"unknown input name(s) {unknown}; forward takes {names}")
        given = dict(example_inputs)
        inputs = {n: given[n] for n in names if n in given}
    elif isinstance(example_inputs, tuple | list):
        if len(example_inputs) > len(names):
            raise ValueError(
                f"{len(example_inputs)} example inputs for {len(names)} parameters {names}"
            )
        inputs = dict(zip(names, example_inputs, strict=False))
    else:
        raise TypeError(
            "example_inputs must be a tensor, a tuple of tensors or a dict name -> tensor; got "
            f"{type(example_inputs).__name__}"
        )
    params = {p.name: p for p in named_parameters_of(model.forward)}
    missing = [
        n for n in names if n not in inputs and n in params and params[n].default is params[n].empty
    ]
    if missing:
        raise ValueError(
            f"missing required input(s) {missing}: give them in example_inputs or bind them; "
            f"inputs are {names}"
        )
    return inputs


def passes_positionally(model: nn.Module, inputs: Mapping[str, Any]) -> bool:
    """True when ``inputs`` are the forward's leading parameters, in order (no gaps)."""
    names = input_param_names(model)
    return list(inputs) == names[: len(inputs)]


def trace_inputs(inputs: Mapping[str, Any], dynamic_batch: bool) -> dict[str, Any]:
    """Inputs for tracing: a batch of 1 is repeated to 2, since size-1 dims get specialised."""
    if not dynamic_batch:
        return dict(inputs)
    return {
        n: (
            v.repeat(2, *([1] * (v.dim() - 1)))
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == 1
            else v
        )
        for n, v in inputs.items()
    }


def output_names(n: int) -> list[str]:
    """``["output"]`` for one output, else ``output_0`` ... ``output_{n-1}``."""
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def first_line(exc: BaseException) -> str:
    """``"<ExceptionType>: <first line of its message>"``, for a fallback reason."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
