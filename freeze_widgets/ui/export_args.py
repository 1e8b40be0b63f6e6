"""The export panel's argument rows: which forward() arguments are inputs, with which example.

Pure helpers (parsing, the example that fits an argument, unwrapping wrappers) are separate from
the row widget so they can be tested without widgets.
"""

from __future__ import annotations

import ast
import html
import inspect
from typing import Any

import ipywidgets as widgets
import torch
from torch import nn

from freeze_widgets.base.modules import default_input_shape as base_default_shape
from freeze_widgets.base.modules import named_parameters_of
from freeze_widgets.export.binding import unwrap_model
from freeze_widgets.export.defaults import DEPLOYMENT_BINDINGS, KEPT_INPUTS

__all__ = [
    "ArgRow",
    "bound_text",
    "default_input_shape",
    "example_text",
    "forward_module",
    "initial_modes",
    "model_params",
    "parse_bound_value",
    "parse_example",
    "parse_shape",
    "positional_parameter",
]

_SEQ = (2, 8)  # batch 2: size-1 dims get specialised by the exporter (docs/design.md, trap 5)
_EXAMPLE_CALLS = {"randn", "rand", "randint", "ones", "zeros"}
_DTYPES = {
    "long": torch.long,
    "int64": torch.int64,
    "int32": torch.int32,
    "int": torch.int32,
    "float": torch.float32,
    "float32": torch.float32,
    "float16": torch.float16,
    "bool": torch.bool,
}
EXAMPLE_HINT = (
    "example: a shape such as 2, 16 (random floats), randint(0, 1000, (2, 8)), "
    "ones(2, 8, dtype=long), or a notebook tensor"
)


def forward_module(model: nn.Module) -> nn.Module:
    """The module whose forward has the real signature: DataParallel/DDP, compile and PEFT
    wrappers looked through (the one rule :func:`bind` and the exporters use)."""
    return unwrap_model(model)[0]


def default_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The package's default example shape, or a feature vector of 16 when it has none."""
    return base_default_shape(model) or (2, 16)


def example_text(name: str, model: nn.Module, shape: tuple[int, ...]) -> str:
    """The example that fits an argument: token ids for ``*_ids``, masks of ones, else a shape."""
    batch, seq = _SEQ
    if name == "attention_mask":
        return f"ones({batch}, {seq}, dtype=long)"
    if name == "token_type_ids":
        return f"zeros({batch}, {seq}, dtype=long)"
    if name == "position_ids":
        return f"randint(0, {seq}, ({batch}, {seq}))"
    if name == "ids" or name.endswith("_ids"):
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        high = vocab if isinstance(vocab, int) and vocab > 0 else 1000
        return f"randint(0, {high}, ({batch}, {seq}))"
    return ", ".join(str(d) for d in shape)


def initial_modes(params: list[inspect.Parameter]) -> dict[str, str]:
    """Required arguments are inputs; if none is, the first one whose default is None is.

    transformers models default every argument (``input_ids=None``), so "required" alone would
    bind them all; None is no usable value for the main input. Beside that main input, the
    attention mask stays an input (a batch of prompts needs its padding).
    """
    modes = {p.name: "input" if p.default is p.empty else "bound" for p in params}
    if "input" not in modes.values():
        first = next((p for p in params if p.default is None), params[0] if params else None)
        if first is not None:
            modes[first.name] = "input"
            for name in KEPT_INPUTS:
                if name in modes:
                    modes[name] = "input"
    return modes


def bound_text(param: inspect.Parameter) -> str:
    """The value a bound row starts with: what a deployment export needs, else the default."""
    if param.name in DEPLOYMENT_BINDINGS:
        return repr(DEPLOYMENT_BINDINGS[param.name])
    return repr(param.default) if param.default is not inspect.Parameter.empty else ""


def positional_parameter(index: int) -> inspect.Parameter:
    """The stand-in parameter of a ``*args`` forward's ``index``-th tensor."""
    return inspect.Parameter(f"input_{index}", inspect.Parameter.POSITIONAL_ONLY)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"2, 3, 224, 224"`` -> ``(2, 3, 224, 224)``."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"shape {text!r} is not a list of integers such as '2, 3, 224, 224'"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(
            f"shape {text!r} needs one or more positive sizes, such as '2, 3, 224, 224'"
        )
    return shape


def _example_call(text: str) -> torch.Tensor | None:
    """``randint(0, 100, (2, 8))``-style text as a tensor; None if it is not such a call."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        return None
    if tree.func.id not in _EXAMPLE_CALLS:
        return None
    args = [ast.literal_eval(arg) for arg in tree.args]
    kwargs: dict[str, Any] = {}
    for keyword in tree.keywords:
        value = keyword.value
        if keyword.arg != "dtype" or not isinstance(value, ast.Name) or value.id not in _DTYPES:
            raise ValueError(f"only dtype=<{'|'.join(_DTYPES)}> is accepted in {text!r}")
        kwargs["dtype"] = _DTYPES[value.id]
    result: torch.Tensor = getattr(torch, tree.func.id)(*args, **kwargs)
    return result


def parse_example(name: str, text: str, namespace: dict[str, Any] | None = None) -> torch.Tensor:
    """An input's example tensor: a notebook tensor, a shape (random floats) or a call.

    Raises:
        ValueError: none of those; the message lists what is accepted.
    """
    text = text.strip()
    if namespace is not None and text.isidentifier() and text in namespace:
        value = namespace[text]
        if isinstance(value, torch.Tensor):
            return value
        raise ValueError(f"{name}: notebook variable {text!r} is a {type(value).__name__}")
    try:
        return torch.randn(*parse_shape(text))
    except ValueError:
        pass
    try:
        tensor = _example_call(text)
    except (ValueError, TypeError, RuntimeError, SyntaxError) as exc:
        raise ValueError(f"{name}: {text!r} failed: {exc}") from None
    if tensor is None:
        raise ValueError(f"{name}: {text!r} is not an example; {EXAMPLE_HINT}")
    return tensor


def parse_bound_value(name: str, text: str, namespace: dict[str, Any] | None = None) -> Any:
    """A bound argument's value: a notebook variable by name, or a Python literal.

    Raises:
        ValueError: neither a variable in ``namespace`` nor a literal; the message says both.
    """
    text = text.strip()
    if not text:
        raise ValueError(f"{name}: bound to nothing; type a value (True, 0.5, None) or a name")
    if namespace is not None and text.isidentifier() and text in namespace:
        return namespace[text]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(
            f"{name}: {text!r} is neither a literal (True, 0.5, None, 'text') nor a variable "
            "defined in the notebook"
        ) from None


class ArgRow(widgets.HBox):
    """One forward() argument: input (with an example) or bound (to a value).

    Switching mode swaps the text: each mode keeps its own (the example for input, the default
    or the value typed for bound), so a shape never becomes a bound value.
    """

    def __init__(self, param: inspect.Parameter, mode: str, example: str) -> None:
        self.param = param
        self._texts = {"input": example, "bound": bound_text(param)}
        self.mode = widgets.ToggleButtons(
            options=["input", "bound"],
            value=mode,
            style={"button_width": "auto"},
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        )
        self.mode.add_class("fw-arg-mode")
        self.value = widgets.Text(value=self._texts[mode], layout=widgets.Layout(width="260px"))
        self.hint = widgets.HTML()
        self.mode.observe(self._on_mode, names="value")
        # At least 140 px so short names line up; a long name widens its row, never clipped.
        label = widgets.HTML(
            f"<code>{html.escape(param.name)}</code>",
            layout=widgets.Layout(min_width="140px", width="auto", flex="0 0 auto"),
        )
        super().__init__([label, self.mode, self.value, self.hint])
        self.add_class("fw-arg-row")
        self._show_hint(mode)

    def _show_hint(self, mode: str) -> None:
        hint = (
            "example: shape (random floats), randint/ones/zeros(...), or a notebook tensor"
            if mode == "input"
            else "literal or notebook variable"
        )
        self.hint.value = f"<small>{html.escape(hint)}</small>"

    def _on_mode(self, change: dict[str, Any]) -> None:
        self._texts[change["old"]] = self.value.value
        self.value.value = self._texts[change["new"]]
        self._show_hint(change["new"])


def model_params(model: nn.Module) -> list[inspect.Parameter]:
    """The named forward() parameters of the real module (wrappers unwrapped)."""
    return named_parameters_of(forward_module(model).forward)
