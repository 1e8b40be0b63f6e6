"""``export_torchscript``: script (trace as fallback), optionally freeze, save, reload, verify."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from freeze_widgets.export.binding import BoundModule, PositionalInputs
from freeze_widgets.export.inputs import ExampleInputs, passes_positionally
from freeze_widgets.export.parity import Runner, flatten
from freeze_widgets.export.report import ExportReport

__all__ = ["TorchScriptMethod", "export_torchscript"]

TorchScriptMethod = Literal["script", "trace"]
"""How the model becomes TorchScript: ``torch.jit.script`` (trace as fallback) or trace."""

_METHODS: tuple[TorchScriptMethod, ...] = get_args(TorchScriptMethod)
_BOUND_REASON = "a BoundModule is traced: its generated forward has no source to script"


def export_torchscript(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | os.PathLike[str],
    *,
    freeze: bool = True,
    preserved_attrs: Sequence[str] | None = None,
    optimize: bool = False,
    method: TorchScriptMethod = "script",
    batch_axes: Mapping[str, int | None] | None = None,
    verify: bool = True,
    tolerance: float = 1e-4,
    verify_batches: Sequence[int] | None = None,
    timing_runs: int = 10,
    warmup: int = 3,
) -> ExportReport:
    """Script (or trace) ``model``, optionally freeze it, save, load back and verify.

    ``torch.jit.script`` runs first; if it fails (or ``method="trace"``) the model is traced and
    the report records why. A :class:`BoundModule` is always traced: its generated forward has
    no source for the scripting compiler. The model is converted in eval mode and every
    submodule's train/eval flag is restored afterwards.

    Args:
        model: The model or a :class:`BoundModule`.
        example_inputs: A tensor, a tuple of tensors or a dict name -> tensor.
        path: Output file (``.pt``); its parent directory is created if missing.
        freeze: ``torch.jit.freeze``: fold parameters and attributes into the graph.
        preserved_attrs: Attributes/methods that freezing must keep on the module.
        optimize: Also run ``torch.jit.optimize_for_inference`` (implies freezing).
        method: ``"script"`` (with trace fallback) or ``"trace"``.
        verify: Compare the reloaded module with eager at other batch sizes and time both.
        batch_axes: Input name -> batch axis, or None for an input without one (as in
            :func:`~freeze_widgets.export.export_onnx`).
        tolerance: Largest accepted ``max|diff| / max|eager|`` per output (scale-relative).
        verify_batches: Batch sizes to verify at (default: two sizes other than traced).
        timing_runs: Timed runs per latency figure (median reported).
        warmup: Untimed runs first; TorchScript's profiling executor needs a few.

    Returns:
        An :class:`ExportReport` with exporter ``"torchscript-script"`` or
        ``"torchscript-trace"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"export_torchscript: model must be a torch.nn.Module; got {type(model).__name__}"
        )
    if method not in _METHODS:
        raise ValueError(f"method must be 'script' or 'trace', not {method!r}")
    check = VerifyOptions(
        verify, tolerance, verify_batches, timing_runs, warmup, batch_axes=batch_axes
    )
    preserved = list(preserved_attrs) if preserved_attrs else None
    converter = _TorchScriptConverter(method, freeze or optimize, preserved, optimize)
    return run_export(model, example_inputs, path, converter, dynamic_batch=True, check=check)


@dataclass(frozen=True)
class _TorchScriptConverter:
    """Writes a TorchScript ``.pt`` file and loads it back for verification."""

    method: TorchScriptMethod
    freeze: bool
    preserved_attrs: list[str] | None
    optimize: bool

    def write(self, job: ExportJob) -> Written:
        scripted, written = self._script_or_trace(job)
        if self.freeze:
            scripted = torch.jit.freeze(scripted, preserved_attrs=self.preserved_attrs)
        if self.optimize:
            scripted = torch.jit.optimize_for_inference(scripted)
        torch.jit.save(scripted, str(job.path))
        return written

    def _script_or_trace(self, job: ExportJob) -> tuple[torch.jit.ScriptModule, Written]:
        if self.method == "script" and isinstance(job.model, BoundModule | PositionalInputs):
            return _trace(job), Written("torchscript-trace", _BOUND_REASON)
        if self.method == "script":
            try:
                return torch.jit.script(job.model), Written("torchscript-script")
            except Exception as exc:  # any scripting failure -> documented trace fallback
                return _trace(job), Written("torchscript-trace", first_line(exc))
        return _trace(job), Written("torchscript-trace")

    def load(self, job: ExportJob, written: Written) -> Loaded:
        loaded = torch.jit.load(str(job.path))
        loaded.eval()
        graph_inputs, n_constants = _script_graph_summary(loaded)
        traced = written.exporter == "torchscript-trace"

        def make_runner() -> Runner:
            def run(feed: Mapping[str, Any]) -> Sequence[Any]:
                with torch.inference_mode():
                    # A traced module takes its inputs positionally only.
                    return flatten(loaded(*feed.values()) if traced else loaded(**feed))

            return run

        file_bytes = job.path.stat().st_size
        return Loaded(graph_inputs, n_constants, file_bytes, None, make_runner)


def _trace(job: ExportJob) -> torch.jit.ScriptModule:
    traced: torch.jit.ScriptModule
    if passes_positionally(job.model, job.inputs):
        traced = torch.jit.trace(job.model, tuple(job.inputs.values()))
    else:
        traced = torch.jit.trace(job.model, example_kwarg_inputs=dict(job.inputs))
    return traced


def _script_graph_summary(module: torch.jit.ScriptModule) -> tuple[list[str], int]:
    """(argument names of forward, tensor constants + state entries) of a loaded ScriptModule."""
    forward: Any = module.forward
    graph: Any = module.graph
    names = [a.name for a in forward.schema.arguments if a.name != "self"]
    constants = sum(
        1
        for node in graph.findAllNodes("prim::Constant")
        if node.output().type().kind() == "TensorType"
    )
    return names, constants + len(module.state_dict())
