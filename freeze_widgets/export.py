"""Partial-bound export: fix some forward arguments, export the rest to ONNX or TorchScript.

``bind(model, mask=m)`` wraps the model in a :class:`BoundModule` whose forward takes only the
remaining arguments, under their original names. ``torch.onnx.export`` rejects a
``functools.partial`` (DESIGN.md trap 5), so the wrapper is a real ``nn.Module``; its forward is
generated with named parameters so the dynamo exporter names the graph inputs after them.

``export_onnx`` exports, checks the file with ``onnx.checker`` and compares onnxruntime with
PyTorch eager at batch sizes other than the one traced. ``export_torchscript`` does the same for
TorchScript. Both return an :class:`ExportReport`.

Heavy imports (onnx, onnxruntime) happen inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import functools
import html
import inspect
import keyword
import os
import statistics
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "BoundModule",
    "ExportReport",
    "ParityResult",
    "bind",
    "export_onnx",
    "export_torchscript",
]

_SCALAR_TYPES = (bool, int, float, str, type(None))
_BUFFER_PREFIX = "_bound_"
# Above this many parameter bytes the ONNX protobuf (2 GB limit) needs external data.
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000

ExampleInputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor] | Mapping[str, Any]


# --------------------------------------------------------------------------------------------
# bind
# --------------------------------------------------------------------------------------------


def _check_constant(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` can be baked into an exported graph."""
    if isinstance(value, (torch.Tensor, *_SCALAR_TYPES)):
        return
    if isinstance(value, tuple):
        for item in value:
            _check_constant(name, item)
        return
    raise ValueError(
        f"cannot bind {name!r} to a {type(value).__name__}: bound values must be tensors, "
        "bool, int, float, str, None, or tuples of those (a constant the exported graph "
        "can hold)"
    )


def _unwrap_partial(
    target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    """Turn ``partial(model, ...)`` or ``partial(model.forward, ...)`` into model + bindings."""
    if not isinstance(target, functools.partial):
        if isinstance(target, types.MethodType) and isinstance(target.__self__, nn.Module):
            target = target.__self__
        if not isinstance(target, nn.Module):
            raise TypeError(
                f"bind() expects an nn.Module, its bound forward, or a functools.partial of "
                f"either; got {type(target).__name__}"
            )
        return target, args, kwargs
    # functools.partial flattens nested partials, so one level is enough.
    dup = sorted(set(target.keywords) & set(kwargs))
    if dup:
        raise ValueError(f"argument(s) bound twice (in the partial and in bind()): {dup}")
    model, _, _ = _unwrap_partial(target.func, (), {})
    return model, (*target.args, *args), {**target.keywords, **kwargs}


def _forward_source(params: Sequence[inspect.Parameter]) -> str:
    """Source of a forward taking ``params`` (without defaults) and passing them on by name."""
    parts = ["self"]
    star_done = False
    for p in params:
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        parts.append(p.name)
    names = ", ".join(f"{p.name!r}: {p.name}" for p in params)
    return f"def forward({', '.join(parts)}):\n    return self._call_bound({{{names}}})\n"


class BoundModule(nn.Module):
    """A model with some forward arguments fixed; the remaining ones are its inputs.

    Create it with :func:`bind`. The model is held as the submodule ``model``, so parameters are
    the model's own. Tensor constants are non-persistent buffers: they move with ``.to()``,
    become ONNX initializers, and stay out of ``state_dict``.

    Attributes:
        model: The wrapped model.
        input_names: Names of the unbound arguments, in signature order.
    """

    def __init__(
        self,
        model: nn.Module,
        signature: inspect.Signature,
        bound: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self._target_params = [
            p
            for p in signature.parameters.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        self._extra_kwargs = [n for n in bound if n not in signature.parameters]
        self._constants: dict[str, Any] = {}
        for name, value in bound.items():
            if isinstance(value, torch.Tensor):
                # detach: a bound nn.Parameter is a constant of the export, not a weight.
                self.register_buffer(_BUFFER_PREFIX + name, value.detach(), persistent=False)
            else:
                self._constants[name] = value
        self._bound_order = list(bound)
        unbound = [p for p in self._target_params if p.name not in bound]
        self.input_names: list[str] = [p.name for p in unbound]
        new_params = [p.replace(annotation=inspect.Parameter.empty) for p in unbound]
        self.__signature__ = inspect.Signature(new_params)
        self.forward = self._make_forward(unbound)  # type: ignore[method-assign]
        # Mirror the model's mode without touching its submodules (train() would recurse and
        # undo per-module choices such as a frozen BatchNorm kept in eval).
        self.training = model.training

    def _make_forward(self, unbound: Sequence[inspect.Parameter]) -> Callable[..., Any]:
        # A generated function with real named parameters: torch.export names graph inputs
        # after them and binds dynamic_shapes by name, which a ``*args`` forward would not.
        for p in unbound:
            if not p.name.isidentifier() or keyword.iskeyword(p.name) or p.name == "self":
                raise ValueError(f"cannot generate a forward with parameter {p.name!r}")
        namespace: dict[str, Any] = {}
        exec(_forward_source(unbound), namespace)
        fn = namespace["forward"]
        fn.__defaults__ = (
            tuple(
                p.default
                for p in unbound
                if p.kind is not inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty
            )
            or None
        )
        fn.__kwdefaults__ = {
            p.name: p.default
            for p in unbound
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty
        } or None
        fn.__qualname__ = f"{type(self).__qualname__}.forward"
        fn.__doc__ = f"Call the wrapped model with inputs {self.input_names} (others bound)."
        return types.MethodType(fn, self)

    @property
    def bound(self) -> dict[str, Any]:
        """Bound argument names mapped to their values (tensors as currently stored)."""
        return {
            n: self._constants[n] if n in self._constants else getattr(self, _BUFFER_PREFIX + n)
            for n in self._bound_order
        }

    def _value(self, name: str, inputs: Mapping[str, Any]) -> Any:
        if name in inputs:
            return inputs[name]
        if name in self._constants:
            return self._constants[name]
        return getattr(self, _BUFFER_PREFIX + name)

    def _call_bound(self, inputs: Mapping[str, Any]) -> Any:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for p in self._target_params:
            value = self._value(p.name, inputs)
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[p.name] = value
            else:
                # Positional: every earlier parameter has a value (bound, input or default),
                # so passing in order keeps forward-pre-hooks seeing ordinary positional args.
                args.append(value)
        for name in self._extra_kwargs:
            kwargs[name] = self._value(name, inputs)
        return self.model(*args, **kwargs)

    def extra_repr(self) -> str:
        shown = {
            n: (f"Tensor{tuple(v.shape)}" if isinstance(v, torch.Tensor) else repr(v))
            for n, v in self.bound.items()
        }
        bound = ", ".join(f"{k}={v}" for k, v in shown.items())
        return f"inputs={self.input_names}, bound=({bound})"


def bind(model: Any, /, *args: Any, **kwargs: Any) -> BoundModule:
    """Fix some forward arguments of ``model``; the others stay inputs, by name and order.

    Positional values bind the first positional parameters after ``self``; keywords bind by
    name. Values must be constants: tensors (stored as buffers) or bool/int/float/str/None.

    Args:
        model: An ``nn.Module``, its bound ``forward``, or a ``functools.partial`` of either.
        *args: Values for the first positional parameters.
        **kwargs: Values by parameter name.

    Returns:
        A :class:`BoundModule` whose forward takes the unbound arguments.

    Raises:
        ValueError: Unknown names, an argument bound twice, a non-constant value, or a
            required parameter that would be neither bound nor an input.

    Example:
        >>> bound = bind(model, mask=torch.ones(4, 8))  # doctest: +SKIP
        >>> bound.input_names  # doctest: +SKIP
        ['x']
    """
    module, args, kwargs = _unwrap_partial(model, args, kwargs)
    signature = inspect.signature(module.forward)
    params = list(signature.parameters.values())
    valid = [
        p.name
        for p in params
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(args) > len(positional):
        raise ValueError(
            f"{len(args)} positional values given but {type(module).__name__}.forward has only "
            f"{len(positional)} positional parameter(s): {[p.name for p in positional]}"
        )
    bound: dict[str, Any] = {}
    for p, value in zip(positional, args, strict=False):
        bound[p.name] = value

    unknown = sorted(n for n in kwargs if n not in valid and not has_var_kw)
    if unknown:
        raise ValueError(
            f"unknown argument name(s) {unknown} for {type(module).__name__}.forward; "
            f"valid names: {valid}"
        )
    twice = sorted(n for n in kwargs if n in bound)
    if twice:
        raise ValueError(f"argument(s) bound twice (positionally and by name): {twice}")
    pos_only = sorted(
        n
        for n in kwargs
        if n in signature.parameters
        and signature.parameters[n].kind is inspect.Parameter.POSITIONAL_ONLY
    )
    if pos_only:
        raise ValueError(f"positional-only parameter(s) cannot be bound by name: {pos_only}")
    bound.update(kwargs)
    for name, value in bound.items():
        _check_constant(name, value)

    # A positional parameter after an input would have to be passed positionally at call time;
    # that is fine. But a required positional-only parameter can't be left for keywords.
    return BoundModule(module, signature, bound)


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------


@dataclass
class ParityResult:
    """Exported model vs PyTorch eager at one batch size."""

    batch: int
    max_abs: float
    max_rel: float
    ok: bool
    eager_ms: float
    exported_ms: float


@dataclass
class ExportReport:
    """What an export produced and how well the exported model matches PyTorch.

    ``max_rel`` is measured only where ``|eager| > atol`` (elsewhere a relative error is noise);
    ``ok`` in a parity entry is ``allclose(exported, eager, rtol, atol)``.
    """

    path: Path
    exporter: str
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
    atol: float = 1e-4
    rtol: float = 1e-3
    checker_ok: bool = True
    verified: bool = False

    @property
    def eager_ms(self) -> float | None:
        """Eager latency at the first verified batch size, in milliseconds."""
        return self.parity[0].eager_ms if self.parity else None

    @property
    def ort_ms(self) -> float | None:
        """Exported-model latency (onnxruntime or TorchScript) at the first verified batch."""
        return self.parity[0].exported_ms if self.parity else None

    @property
    def bound_leaked(self) -> list[str]:
        """Bound argument names that wrongly appear as graph inputs (should be empty)."""
        return [n for n in self.bound_names if n in self.graph_inputs]

    @property
    def ok(self) -> bool:
        """Checker passed, every parity check passed, no bound name is a graph input."""
        return (
            self.checker_ok
            and self.verified
            and all(p.ok for p in self.parity)
            and not self.bound_leaked
        )

    def to_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a readable table."""
        rows = [
            ("file", str(self.path)),
            ("exporter", self.exporter),
        ]
        if self.fallback_reason:
            rows.append(("fallback reason", self.fallback_reason))
        rows += [
            ("opset", "-" if self.opset is None else str(self.opset)),
            ("inputs", ", ".join(self.input_names) or "-"),
            ("graph inputs", ", ".join(self.graph_inputs) or "-"),
            ("bound", ", ".join(self.bound_names) or "-"),
            ("outputs", ", ".join(self.output_names) or "-"),
            ("initializers", str(self.initializer_count)),
            ("file size", _format_bytes(self.file_bytes)),
            ("export time", f"{self.export_seconds:.2f} s"),
        ]
        runtime = "onnxruntime" if self.exporter.startswith("onnx") else "torchscript"
        for p in self.parity:
            verdict = "ok" if p.ok else "MISMATCH"
            rows.append(
                (
                    f"parity @ batch {p.batch}",
                    f"{verdict}: max abs {p.max_abs:.2e}, max rel {p.max_rel:.2e} "
                    f"(atol {self.atol:g}, rtol {self.rtol:g})",
                )
            )
            ratio = p.exported_ms / p.eager_ms if p.eager_ms > 0 else float("nan")
            rows.append(
                (
                    f"latency @ batch {p.batch}",
                    f"eager {p.eager_ms:.2f} ms, {runtime} {p.exported_ms:.2f} ms ({ratio:.2f}x)",
                )
            )
        if not self.verified:
            rows.append(("verified", "no"))
        if self.bound_leaked:
            rows.append(("bound names in graph inputs", ", ".join(self.bound_leaked)))
        rows.append(("status", "OK" if self.ok else "FAILED"))
        return rows

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


def _format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own flag afterwards.

    Restoring per module (not ``model.train(was_training)``) keeps a frozen BatchNorm that the
    user put in eval inside a training model in eval (DESIGN.md trap 1).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _input_param_names(model: nn.Module) -> list[str]:
    if isinstance(model, BoundModule):
        return list(model.input_names)
    params = inspect.signature(model.forward).parameters.values()
    return [
        p.name
        for p in params
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _normalize_inputs(model: nn.Module, example_inputs: ExampleInputs) -> dict[str, Any]:
    """Example inputs as an ordered name -> value dict, in the forward's parameter order."""
    names = _input_param_names(model)
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
    params = inspect.signature(model.forward).parameters
    missing = [
        n for n in names if n not in inputs and n in params and params[n].default is params[n].empty
    ]
    if missing:
        raise ValueError(
            f"missing required input(s) {missing}: give them in example_inputs or bind them; "
            f"inputs are {names}"
        )
    return inputs


def _batch_of(inputs: Mapping[str, Any]) -> int | None:
    for v in inputs.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return None


def _resize_batch(
    inputs: Mapping[str, Any], batch: int, generator: torch.Generator
) -> dict[str, Any]:
    """Inputs with axis 0 resized to ``batch``: rows drawn from the example (ids stay valid),
    floats nudged so the rows differ."""
    out: dict[str, Any] = {}
    for name, v in inputs.items():
        if not isinstance(v, torch.Tensor) or v.dim() == 0:
            out[name] = v
            continue
        idx = torch.randint(0, v.shape[0], (batch,), generator=generator)
        rows = v.detach()[idx.to(v.device)].clone()
        if rows.is_floating_point():
            scale = float(v.detach().float().std()) if v.numel() > 1 else 1.0
            noise = torch.randn(rows.shape, generator=generator, dtype=torch.float32)
            rows = rows + (0.1 * (scale or 1.0) * noise).to(rows.dtype).to(rows.device)
        out[name] = rows
    return out


def _flatten(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in _flatten(v)]
    if isinstance(output, tuple | list):
        return [t for v in output for t in _flatten(v)]
    return []


def _compare(
    exported: Sequence[Any], eager: Sequence[torch.Tensor], atol: float, rtol: float
) -> tuple[float, float, bool]:
    """(max abs diff, max rel diff where |eager| > atol, allclose) over all outputs."""
    if len(exported) != len(eager):
        return float("inf"), float("inf"), False
    max_abs = 0.0
    max_rel = 0.0
    ok = True
    for got_raw, want_raw in zip(exported, eager, strict=True):
        want = want_raw.detach().cpu()
        got = torch.as_tensor(got_raw).cpu()
        if got.shape != want.shape:
            return float("inf"), float("inf"), False
        if want.numel() == 0:
            continue
        got64 = got.to(torch.float64)
        want64 = want.to(torch.float64)
        diff = (got64 - want64).abs()
        max_abs = max(max_abs, float(diff.max()))
        big = want64.abs() > atol
        if bool(big.any()):
            max_rel = max(max_rel, float((diff[big] / want64.abs()[big]).max()))
        ok = ok and bool(torch.allclose(got64, want64, rtol=rtol, atol=atol, equal_nan=True))
    return max_abs, max_rel, ok


def _paired_median_ms(
    first: Callable[[], Any], second: Callable[[], Any], runs: int, warmup: int
) -> tuple[float, float]:
    """Median milliseconds of two callables, timed alternately.

    Alternating run by run means both see the same machine load, so their ratio holds up
    on a busy machine better than timing one block after the other.
    """
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(max(runs, 1)):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


def _bound_names(model: nn.Module) -> list[str]:
    return list(model.bound) if isinstance(model, BoundModule) else []


def _output_names(n: int) -> list[str]:
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _to_numpy(value: torch.Tensor) -> Any:
    return value.detach().cpu().contiguous().numpy()


def _graph_summary(path: Path) -> tuple[list[str], int, int | None, int]:
    """(graph inputs, initializer count, default-domain opset, total bytes incl. external data)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in proto.graph.initializer}
    # Older IR versions list initializers among the inputs; those are weights, not inputs.
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    external: set[str] = set()
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    external.add(entry.value)
    total = path.stat().st_size
    for location in external:
        data_file = path.parent / location
        if data_file.exists():
            total += data_file.stat().st_size
    return inputs, len(initializers), opset, total


def _param_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _export_dynamo(
    model: nn.Module,
    inputs: Mapping[str, Any],
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_batch: bool,
    opset: int | None,
) -> None:
    dynamic_shapes: dict[str, Any] | None = None
    if dynamic_batch:
        # Strings become Dim.DYNAMIC and the ONNX axis is renamed to "batch". torch.export
        # matches this dict against the forward's parameter names, which is why BoundModule
        # generates a forward with named parameters rather than ``*args``.
        dynamic_shapes = {
            name: ({0: "batch"} if isinstance(v, torch.Tensor) and v.dim() > 0 else None)
            for name, v in inputs.items()
        }
    import warnings

    with warnings.catch_warnings():
        # Inputs sharing the batch axis make the renamer note it skips duplicates: expected.
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
        _dynamo_export_call(model, inputs, path, input_names, output_names, opset, dynamic_shapes)


def _dynamo_export_call(
    model: nn.Module,
    inputs: Mapping[str, Any],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    opset: int | None,
    dynamic_shapes: dict[str, Any] | None,
) -> None:
    torch.onnx.export(
        model,
        (),
        str(path),
        kwargs=dict(inputs),
        input_names=input_names,
        output_names=output_names,
        opset_version=opset,
        dynamo=True,
        verbose=False,  # its progress lines would clutter notebook output
        dynamic_shapes=dynamic_shapes,
        external_data=_param_bytes(model) > _EXTERNAL_DATA_THRESHOLD,
        # No report / dumps: they would be written to the current directory.
        report=False,
        verify=False,
        profile=False,
        dump_exported_program=False,
        optimize=True,
    )


def _export_torchscript_onnx(
    model: nn.Module,
    inputs: Mapping[str, Any],
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_batch: bool,
    opset: int | None,
) -> None:
    import warnings

    dynamic_axes: dict[str, dict[int, str]] | None = None
    if dynamic_batch:
        dynamic_axes = {
            name: {0: "batch"}
            for name, v in inputs.items()
            if isinstance(v, torch.Tensor) and v.dim() > 0
        }
        dynamic_axes.update({name: {0: "batch"} for name in output_names})
    names = _input_param_names(model)
    # Positional when the inputs are the leading parameters (the legacy exporter's usual path),
    # keywords when an optional parameter in between was left out.
    positional = list(inputs) == names[: len(inputs)]
    with warnings.catch_warnings():
        # The legacy exporter warns that it is legacy; the report records which one ran.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            tuple(inputs.values()) if positional else (),
            str(path),
            kwargs=None if positional else dict(inputs),
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamo=False,
            dynamic_axes=dynamic_axes,
        )


def _verify(
    run_exported: Callable[[Mapping[str, Any]], Sequence[Any]],
    model: nn.Module,
    inputs: Mapping[str, Any],
    batches: Sequence[int],
    *,
    atol: float,
    rtol: float,
    timing_runs: int,
    warmup: int,
) -> list[ParityResult]:
    """Exported vs eager on fresh inputs at each batch size, with median latencies."""
    generator = torch.Generator().manual_seed(0)
    results = []
    for batch in batches:
        feed = _resize_batch(inputs, batch, generator) if _batch_of(inputs) else dict(inputs)
        with torch.inference_mode():
            eager = _flatten(model(**feed))
        got = run_exported(feed)
        max_abs, max_rel, ok = _compare(got, eager, atol, rtol)

        def eager_call(feed: Mapping[str, Any] = feed) -> Any:
            with torch.inference_mode():
                return model(**feed)

        def exported_call(feed: Mapping[str, Any] = feed) -> Any:
            return run_exported(feed)

        eager_ms, exported_ms = _paired_median_ms(eager_call, exported_call, timing_runs, warmup)
        results.append(ParityResult(batch, max_abs, max_rel, ok, eager_ms, exported_ms))
    return results


def _trace_inputs(inputs: Mapping[str, Any], dynamic_batch: bool) -> dict[str, Any]:
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


def _default_batches(trace_batch: int | None, dynamic_batch: bool) -> list[int]:
    if trace_batch is None or not dynamic_batch:
        return [trace_batch or 1]
    return [b for b in (1, 5, 3) if b != trace_batch][:2]


def export_onnx(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    exporter: Literal["dynamo", "torchscript"] = "dynamo",
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    verify_batches: Sequence[int] | None = None,
    timing_runs: int = 10,
    warmup: int = 2,
) -> ExportReport:
    """Export ``model`` to ONNX, check the file and compare onnxruntime with PyTorch.

    The dynamo exporter runs first (dynamic batch axis 0 via ``dynamic_shapes``); if it fails,
    the TorchScript exporter runs and the report records why. The model is exported in eval mode
    and every submodule's train/eval flag is restored afterwards, also on error.

    Args:
        model: The model, typically a :class:`BoundModule` from :func:`bind`.
        example_inputs: A tensor, a tuple of tensors (positional) or a dict name -> tensor.
        path: Output ``.onnx`` file; its parent directory is created if missing.
        dynamic_batch: Make axis 0 of every input (and output) dynamic.
        opset: ONNX opset; None lets PyTorch choose.
        exporter: ``"dynamo"`` (with TorchScript fallback) or ``"torchscript"`` (forced).
        verify: Run onnxruntime against eager and time both.
        atol: Absolute tolerance of the parity check.
        rtol: Relative tolerance of the parity check.
        verify_batches: Batch sizes to verify at; default two sizes other than the traced one
            (1 and 5 when tracing at 2).
        timing_runs: Timed runs per latency figure (median reported).
        warmup: Untimed runs before timing.

    Returns:
        An :class:`ExportReport`; ``report.ok`` tells whether every check passed.
    """
    import onnx

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"export_onnx needs an nn.Module, got {type(model).__name__}; wrap a "
            "functools.partial with bind(partial) first"
        )
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', not {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = _normalize_inputs(model, example_inputs)
    input_names = list(inputs)

    with _eval_mode(model):
        traced_inputs = _trace_inputs(inputs, dynamic_batch)
        with torch.inference_mode():
            n_outputs = len(_flatten(model(**traced_inputs)))
        output_names = _output_names(n_outputs)
        fallback_reason: str | None = None
        used = exporter
        start = time.perf_counter()
        if exporter == "dynamo":
            try:
                _export_dynamo(
                    model,
                    traced_inputs,
                    path,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_batch=dynamic_batch,
                    opset=opset,
                )
            except Exception as exc:  # any exporter failure -> documented fallback
                fallback_reason = _first_line(exc)
                used = "torchscript"
        if used == "torchscript":
            try:
                _export_torchscript_onnx(
                    model,
                    traced_inputs,
                    path,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_batch=dynamic_batch,
                    opset=opset,
                )
            except Exception as exc:
                if fallback_reason is None:
                    raise
                # Keep the first failure visible: it is usually the one worth fixing.
                raise RuntimeError(
                    f"both ONNX exporters failed; dynamo: {fallback_reason}; "
                    f"torchscript: {_first_line(exc)}"
                ) from exc
        export_seconds = time.perf_counter() - start

        # A path (not a loaded proto) lets the checker handle models over 2 GB.
        onnx.checker.check_model(str(path))
        graph_inputs, n_init, actual_opset, file_bytes = _graph_summary(path)
        report = ExportReport(
            path=path,
            exporter=f"onnx-{used}",
            fallback_reason=fallback_reason,
            opset=actual_opset,
            input_names=input_names,
            output_names=output_names,
            bound_names=_bound_names(model),
            graph_inputs=graph_inputs,
            initializer_count=n_init,
            file_bytes=file_bytes,
            export_seconds=export_seconds,
            atol=atol,
            rtol=rtol,
        )
        if verify:
            session = _ort_session(path)
            expected = {i.name for i in session.get_inputs()}

            def run(feed: Mapping[str, Any]) -> Sequence[Any]:
                ort_feed = {
                    n: _to_numpy(v)
                    for n, v in feed.items()
                    if n in expected and isinstance(v, torch.Tensor)
                }
                return session.run(None, ort_feed)  # type: ignore[no-any-return]

            batches = verify_batches or _default_batches(_batch_of(traced_inputs), dynamic_batch)
            _attach_parity(report, run, model, inputs, batches, timing_runs, warmup)
    return report


def _attach_parity(
    report: ExportReport,
    run: Callable[[Mapping[str, Any]], Sequence[Any]],
    model: nn.Module,
    inputs: Mapping[str, Any],
    batches: Sequence[int],
    timing_runs: int,
    warmup: int,
) -> None:
    """Compare the exported ``run`` with eager ``model`` at ``batches``; fills the report."""
    report.parity = _verify(
        run,
        model,
        inputs,
        list(batches),
        atol=report.atol,
        rtol=report.rtol,
        timing_runs=timing_runs,
        warmup=warmup,
    )
    report.verified = True


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Same thread budget as PyTorch, so the latency comparison is like for like.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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


def export_torchscript(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | os.PathLike[str],
    *,
    freeze: bool = True,
    preserved_attrs: Sequence[str] | None = None,
    optimize: bool = False,
    method: Literal["script", "trace"] = "script",
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
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
        atol: Absolute tolerance of the parity check.
        rtol: Relative tolerance of the parity check.
        verify_batches: Batch sizes to verify at (default: two sizes other than traced).
        timing_runs: Timed runs per latency figure (median reported).
        warmup: Untimed runs first; TorchScript's profiling executor needs a few.

    Returns:
        An :class:`ExportReport` with exporter ``"torchscript-script"`` or
        ``"torchscript-trace"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_torchscript needs an nn.Module, got {type(model).__name__}")
    if method not in ("script", "trace"):
        raise ValueError(f"method must be 'script' or 'trace', not {method!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = _normalize_inputs(model, example_inputs)
    input_names = list(inputs)

    with _eval_mode(model):
        traced_inputs = _trace_inputs(inputs, dynamic_batch=True)
        with torch.inference_mode():
            n_outputs = len(_flatten(model(**traced_inputs)))
        used: str = method
        fallback_reason: str | None = None
        start = time.perf_counter()
        scripted: torch.jit.ScriptModule | None = None
        if method == "script" and isinstance(model, BoundModule):
            used = "trace"
            fallback_reason = (
                "a BoundModule is traced: its generated forward has no source to script"
            )
        elif method == "script":
            try:
                scripted = torch.jit.script(model)
            except Exception as exc:  # any scripting failure -> documented trace fallback
                used = "trace"
                fallback_reason = _first_line(exc)
        if scripted is None:
            names = _input_param_names(model)
            if input_names == names[: len(input_names)]:
                scripted = torch.jit.trace(model, tuple(traced_inputs.values()))
            else:
                scripted = torch.jit.trace(model, example_kwarg_inputs=dict(traced_inputs))
        if freeze or optimize:
            preserved = list(preserved_attrs) if preserved_attrs else None
            scripted = torch.jit.freeze(scripted, preserved_attrs=preserved)
        if optimize:
            scripted = torch.jit.optimize_for_inference(scripted)
        torch.jit.save(scripted, str(path))
        export_seconds = time.perf_counter() - start

        loaded = torch.jit.load(str(path))
        loaded.eval()
        graph_inputs, n_constants = _script_graph_summary(loaded)
        report = ExportReport(
            path=path,
            exporter=f"torchscript-{used}",
            fallback_reason=fallback_reason,
            opset=None,
            input_names=input_names,
            output_names=_output_names(n_outputs),
            bound_names=_bound_names(model),
            graph_inputs=graph_inputs,
            initializer_count=n_constants,
            file_bytes=path.stat().st_size,
            export_seconds=export_seconds,
            atol=atol,
            rtol=rtol,
        )
        if verify:

            def run(feed: Mapping[str, Any]) -> Sequence[Any]:
                with torch.inference_mode():
                    if used == "trace":
                        return _flatten(loaded(*feed.values()))
                    return _flatten(loaded(**feed))

            batches = verify_batches or _default_batches(_batch_of(traced_inputs), True)
            _attach_parity(report, run, model, inputs, batches, timing_runs, warmup)
    return report
