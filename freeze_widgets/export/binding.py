"""``bind``: fix some forward arguments of a model; the rest stay inputs, by name and order.

``torch.onnx.export`` rejects a ``functools.partial`` (docs/design.md, trap 5), so the result is
a real ``nn.Module``, :class:`BoundModule`. Its forward is generated with named parameters so the
dynamo exporter names the graph inputs after them and binds ``dynamic_shapes`` by name.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from freeze_widgets.base.modules import is_variadic

__all__ = ["BoundModule", "PositionalInputs", "bind", "unwrap_model"]

_SCALAR_TYPES = (bool, int, float, str, type(None))
_BUFFER_PREFIX = "_bound_"
_POSITIONAL_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


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


def _generated_function(unbound: Sequence[inspect.Parameter]) -> Callable[..., Any]:
    """A plain function ``forward(self, <unbound>)`` carrying the unbound parameters' defaults."""
    for p in unbound:
        if not p.name.isidentifier() or keyword.iskeyword(p.name) or p.name == "self":
            raise ValueError(f"cannot generate a forward with parameter {p.name!r}")
    namespace: dict[str, Any] = {}
    exec(_forward_source(unbound), namespace)
    fn = namespace["forward"]
    keyword_only = inspect.Parameter.KEYWORD_ONLY
    fn.__defaults__ = (
        tuple(p.default for p in unbound if p.kind is not keyword_only and p.default is not p.empty)
        or None
    )
    fn.__kwdefaults__ = {
        p.name: p.default for p in unbound if p.kind is keyword_only and p.default is not p.empty
    } or None
    return fn  # type: ignore[no-any-return]


class BoundModule(nn.Module):
    """A model with some forward arguments fixed; the remaining ones are its inputs.

    Create it with :func:`bind`. The model is held as the submodule ``model``, so parameters are
    the model's own. Tensor constants are non-persistent buffers: they move with ``.to()``,
    become ONNX initializers, and stay out of ``state_dict``.

    Attributes:
        model: The wrapped model.
        input_names: Names of the unbound arguments, in signature order.
        unwrapped: Notes on compile / data-parallel wrappers that ``bind`` looked through.
    """

    def __init__(
        self,
        model: nn.Module,
        signature: inspect.Signature,
        bound: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self._target_params = [p for p in signature.parameters.values() if not is_variadic(p)]
        self._extra_kwargs = [n for n in bound if n not in signature.parameters]
        self._constants: dict[str, Any] = {}
        for name, value in bound.items():
            if isinstance(value, torch.Tensor):
                # detach: a bound nn.Parameter is a constant of the export, not a weight.
                self.register_buffer(_BUFFER_PREFIX + name, value.detach(), persistent=False)
            else:
                self._constants[name] = value
        self._bound_order = list(bound)
        self.unwrapped: list[str] = []
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
        fn = _generated_function(unbound)
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
        # By keyword wherever the signature allows: transformers' forward decorators inject
        # keywords such as ``use_cache``, which collide with a value passed in that position
        # (docs/design.md, trap 16). A value that is the parameter's own default is left out,
        # as a person calling the model would. Positional-only parameters go in order.
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        pending: list[Any] = []  # defaults of skipped positional-only parameters
        for p in self._target_params:
            value = self._value(p.name, inputs)
            given = value is not p.default
            if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                pending.append(value)
                if given:
                    args += pending
                    pending = []
            elif given:
                kwargs[p.name] = value
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


def _bind_positional(
    module: nn.Module, signature: inspect.Signature, args: tuple[Any, ...]
) -> dict[str, Any]:
    """Positional values mapped to the first positional parameters of ``module.forward``."""
    positional = [p for p in signature.parameters.values() if p.kind in _POSITIONAL_KINDS]
    if len(args) > len(positional):
        raise ValueError(
            f"{len(args)} positional values given but {type(module).__name__}.forward has only "
            f"{len(positional)} positional parameter(s): {[p.name for p in positional]}"
        )
    return {p.name: value for p, value in zip(positional, args, strict=False)}


def _check_keywords(
    module: nn.Module,
    signature: inspect.Signature,
    kwargs: Mapping[str, Any],
    bound: Mapping[str, Any],
) -> None:
    """Raise ValueError for unknown, twice-bound or positional-only names in ``kwargs``."""
    params = signature.parameters
    valid = [p.name for p in params.values() if not is_variadic(p)]
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
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
        n for n in kwargs if n in params and params[n].kind is inspect.Parameter.POSITIONAL_ONLY
    )
    if pos_only:
        raise ValueError(f"positional-only parameter(s) cannot be bound by name: {pos_only}")


def _wrapped_module(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The module inside a torch.compile / (Distributed)DataParallel / PEFT wrapper, and a note."""
    inner = getattr(model, "_orig_mod", None)
    if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module):
        return inner, "torch.compile wrapper (OptimizedModule): exported its ._orig_mod"
    base = getattr(model, "get_base_model", None)
    if any(c.__name__ == "PeftModel" for c in type(model).__mro__) and callable(base):
        # PEFT's forward(*args, **kwargs) hides the signature; its adapters live in the base.
        note = f"{type(model).__name__} wrapper: exported its base model (adapters included)"
        return base(), note
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    if isinstance(model, parallel) and isinstance(model.module, nn.Module):
        return model.module, f"{type(model).__name__} wrapper: exported its .module"
    return None


def unwrap_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The module that does the work under compile / data-parallel wrappers, and notes saying so.

    The wrappers' ``forward(*args, **kwargs)`` hides the real signature, and a compiled module
    cannot be exported again; the wrapped module shares the very same parameters.
    """
    notes: list[str] = []
    while (found := _wrapped_module(model)) is not None:
        model, note = found
        notes.append(note)
    return model, notes


class PositionalInputs(nn.Module):
    """A ``forward(*args)`` model seen through a forward with one named parameter per input.

    torch.export binds ``dynamic_shapes`` by parameter name, and the report names graph inputs;
    a variadic forward has neither, so each example input gets a name (``args_0``, ...).

    Attributes:
        model: The wrapped model.
        input_names: The generated input names, in call order.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names: list[str] = list(names)
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        fn = _generated_function([inspect.Parameter(n, kind) for n in names])
        fn.__qualname__ = f"{type(self).__qualname__}.forward"
        self.forward = types.MethodType(fn, self)  # type: ignore[method-assign]
        self.training = model.training  # mirror, without touching submodules

    def _call_bound(self, inputs: Mapping[str, Any]) -> Any:
        return self.model(*(inputs[n] for n in self.input_names))


def bind(model: Any, /, *args: Any, **kwargs: Any) -> BoundModule:
    """Fix some forward arguments of ``model``; the others stay inputs, by name and order.

    Positional values bind the first positional parameters after ``self``; keywords bind by
    name. A ``torch.compile``d module or a (Distributed)DataParallel wrapper is looked through
    to the module inside (same parameters). The model is called with keywords wherever its
    signature allows (transformers injects keywords such as ``use_cache``). Values must be
    constants: tensors (stored as buffers) or bool/int/float/str/None.
    Unbound parameters without a default are not checked here: they must be given as example
    inputs when exporting, which names any that are missing.

    Args:
        model: An ``nn.Module``, its bound ``forward``, or a ``functools.partial`` of either.
        *args: Values for the first positional parameters.
        **kwargs: Values by parameter name.

    Returns:
        A :class:`BoundModule` whose forward takes the unbound arguments.

    Raises:
        TypeError: ``model`` is not a module, its forward, or a partial of either.
        ValueError: Unknown names, more positional values than positional parameters, an
            argument bound twice, a positional-only parameter bound by name, or a value that is
            not a constant.

    Example:
        >>> bound = bind(model, mask=torch.ones(4, 8))  # doctest: +SKIP
        >>> bound.input_names  # doctest: +SKIP
        ['x']
    """
    module, args, kwargs = _unwrap_partial(model, args, kwargs)
    module, notes = unwrap_model(module)
    signature = inspect.signature(module.forward)
    bound = _bind_positional(module, signature, args)
    _check_keywords(module, signature, kwargs, bound)
    bound.update(kwargs)
    for name, value in bound.items():
        _check_constant(name, value)
    result = BoundModule(module, signature, bound)
    result.unwrapped = notes
    return result
