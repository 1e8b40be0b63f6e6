"""Example inputs of an export: by name, with the batch axes traced and the outputs named."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from freeze_widgets.base.modules import named_parameters_of
from freeze_widgets.export.binding import BoundModule, PositionalInputs
from freeze_widgets.export.parity import BatchAxes

__all__ = [
    "ExampleInputs",
    "input_param_names",
    "normalize_inputs",
    "output_names",
    "passes_positionally",
    "resolve_batch_axes",
    "trace_inputs",
]

ExampleInputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor] | Mapping[str, Any]


def input_param_names(model: nn.Module) -> list[str]:
    """The names a model's forward takes as inputs (a BoundModule's unbound ones)."""
    if isinstance(model, BoundModule | PositionalInputs):
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


def resolve_batch_axes(
    inputs: Mapping[str, Any], batch_axes: Mapping[str, int | None] | None
) -> dict[str, int | None]:
    """The batch axis of every tensor input (None: the input has no batch).

    Given axes win. Otherwise axis 0 is the batch when its size equals the example batch:
    the largest axis-0 size among inputs not given, so a ``mask[1, L]`` beside ``x[4, L]``
    stays static-shaped while ``x`` gets the dynamic batch.
    """
    given = dict(batch_axes or {})
    unknown = sorted(n for n in given if n not in inputs)
    if unknown:
        raise ValueError(f"batch_axes names unknown input(s) {unknown}; inputs are {list(inputs)}")
    tensors = {n: v for n, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
    for name, axis in given.items():
        dims = tensors[name].dim() if name in tensors else 0
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise TypeError(f"batch_axes[{name!r}] must be an int axis or None; got {axis!r}")
        if axis is not None and not -dims <= axis < dims:
            raise ValueError(f"batch_axes[{name!r}] = {axis} but that input has {dims} dim(s)")
        if axis is not None and axis < 0:  # -1 is the last axis, as in PyTorch
            given[name] = axis + dims
    sizes = [int(v.shape[0]) for n, v in tensors.items() if n not in given]
    batch = max(sizes, default=None)
    return {
        n: given[n] if n in given else (0 if int(v.shape[0]) == batch else None)
        for n, v in tensors.items()
    }


def trace_inputs(inputs: Mapping[str, Any], axes: BatchAxes) -> dict[str, Any]:
    """Inputs for tracing: a batch of 1 is repeated to 2, since size-1 dims get specialised."""
    out = dict(inputs)
    for name, axis in axes.items():
        v = inputs[name]
        if axis is not None and v.shape[axis] == 1:
            repeats = [2 if d == axis else 1 for d in range(v.dim())]
            out[name] = v.repeat(*repeats)
    return out


def output_names(n: int) -> list[str]:
    """``["output"]`` for one output, else ``output_0`` ... ``output_{n-1}``."""
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]
