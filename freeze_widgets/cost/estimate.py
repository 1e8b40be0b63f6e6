"""``estimate_cost``: what a training step costs in memory (and backward compute) under a freeze.

Weights, gradients and optimizer state are O(parameters) sums over ``requires_grad``.
Activations are what autograd keeps for backward, and the forward's peak (saved so far plus the
feature maps alive at that moment), measured once per freeze state with one training-mode
forward on a meta-device copy (:mod:`freeze_widgets.cost.meta_forward`): nothing is allocated and
the model is not touched. :class:`CostModel` keeps that copy and the per-module
multiply-accumulate table, so re-estimating after a tick costs one meta forward at most (and
nothing for a freeze state seen before).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from freeze_widgets.base.checks import require_module
from freeze_widgets.base.modules import default_input_shape
from freeze_widgets.base.wording import first_line, format_bytes
from freeze_widgets.cost.meta_forward import (
    ForwardMemory,
    Inputs,
    ModuleMacs,
    forward_memory,
    meta_copy,
    module_macs,
    to_meta,
)

__all__ = ["CostEstimate", "CostModel", "estimate_cost"]

# Optimizer state tensors per trainable element (the scalar "step" counters are ignored).
STATES_PER_ELEMENT: dict[str, int] = {
    "adam": 2,
    "adamw": 2,
    "sgd": 0,
    "sgd_momentum": 1,
    "rmsprop": 1,
    "adagrad": 1,
}


@dataclass(frozen=True)
class CostEstimate:
    """Memory of one training step under one freeze, in bytes, and the backward compute share.

    Attributes:
        weight_bytes: Every parameter (tied ones once) and buffer.
        grad_bytes: One gradient per trainable element.
        optimizer_state_bytes: The optimizer's per-element state for trainable elements.
        activation_bytes: Tensors autograd saves for backward (0 when not measured; see
            ``assumptions``).
        forward_peak_bytes: The most activation memory alive at once in the forward: what
            was saved so far plus the transient feature maps (a layer's input and output, a
            residual identity) that nothing keeps for backward. With almost everything frozen
            little is saved but this peak remains; never below ``activation_bytes``.
        backward_share: Backward multiply-accumulates still needed, relative to nothing frozen
            (1.0 unfrozen; weight-gradient plus input-gradient work of Linear/Conv layers).
        assumptions: How the numbers were obtained, one sentence each.
        unfrozen: The same estimate with nothing frozen (None on that estimate itself).
    """

    weight_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int
    activation_bytes: int
    backward_share: float
    forward_peak_bytes: int = 0
    assumptions: tuple[str, ...] = ()
    unfrozen: CostEstimate | None = field(default=None, repr=False)

    @property
    def transient_bytes(self) -> int:
        """What the forward's peak adds on top of the saved activations."""
        return max(0, self.forward_peak_bytes - self.activation_bytes)

    @property
    def total_bytes(self) -> int:
        """Weights, gradients and state, plus the larger of saved activations and the forward peak.

        Backward frees saved tensors as it goes while adding gradients of the same size at
        most, so the step's peak is taken as the forward's (measured within 25% of a real
        CPU step's peak RSS in ``benchmarks/bench_cost.py``).
        """
        activations = max(self.activation_bytes, self.forward_peak_bytes)
        return self.weight_bytes + self.grad_bytes + self.optimizer_state_bytes + activations

    def summary(self) -> str:
        """One line, e.g. "training memory about 1.13 GiB, 3.4x less than unfrozen"."""
        line = f"training memory about {format_bytes(self.total_bytes)}"
        if self.unfrozen is not None and self.total_bytes > 0:
            saved = self.unfrozen.total_bytes - self.total_bytes
            ratio = self.unfrozen.total_bytes / self.total_bytes
            if ratio >= 1.1:  # a factor reads well from 1.1x on; below it, say what is saved
                line += f", {ratio:.1f}x less than unfrozen"
            elif saved > 0:
                line += f", {format_bytes(saved)} less than unfrozen"
            else:
                line += ", the same as unfrozen"
        if any(a.startswith("Could not estimate activations") for a in self.assumptions):
            line += " (activations not included: see assumptions)"
        return line

    def __str__(self) -> str:
        return self.summary()


def _stored_bytes(t: torch.Tensor, size: int) -> int:
    """Bytes of ``t`` when floating tensors are held in a dtype of ``size`` bytes."""
    return t.numel() * (size if t.is_floating_point() else t.element_size())


def _states_per_element(optimizer: object) -> int:
    """State tensors per trainable element; an instance's own settings add theirs."""
    if isinstance(optimizer, torch.optim.Optimizer):
        name = type(optimizer).__name__.lower()
        options = optimizer.defaults
        if name == "sgd":
            return 1 if options.get("momentum", 0) else 0
        if name in ("adam", "adamw"):
            return 3 if options.get("amsgrad") else 2  # max_exp_avg_sq
        if name == "rmsprop":  # square_avg, momentum_buffer, grad_avg
            return 1 + int(bool(options.get("momentum", 0))) + int(bool(options.get("centered")))
        optimizer = name
    if not isinstance(optimizer, str):
        raise TypeError(
            "optimizer must be a name (" + ", ".join(STATES_PER_ELEMENT) + ") or a "
            f"torch.optim.Optimizer; got {type(optimizer).__name__}"
        )
    key = optimizer.lower().replace("-", "_")
    if key not in STATES_PER_ELEMENT:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; choose one of {', '.join(STATES_PER_ELEMENT)}"
        )
    return STATES_PER_ELEMENT[key]


#: Images in the default batch: two, since a training-mode BatchNorm refuses one value per
#: channel (a 1x1 feature map of a single image).
DEFAULT_BATCH = 2


def default_inputs(model: nn.Module) -> torch.Tensor | None:
    """Meta-device inputs by the package's one default rule (nothing is allocated)."""
    shape = default_input_shape(model, batch=DEFAULT_BATCH)
    return None if shape is None else torch.empty(shape, device="meta")


def _backward_share(work: list[tuple[int, bool]]) -> float:
    """Weight-grad + input-grad work needed now, over the same with nothing frozen.

    ``work`` is ``(forward work, trains)`` per layer in execution order. A layer needs its
    weight gradient when it trains, and its input gradient when any trainable layer ran before
    it (a gradient must flow through it). Unfrozen, every layer but the first needs both.
    """
    if not work:
        return 1.0
    full = sum(w for w, _ in work) * 2 - work[0][0]
    needed, upstream = 0, False
    for w, trains in work:
        needed += w * (int(trains) + int(upstream))
        upstream = upstream or trains
    return needed / full if full else 1.0


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


class CostModel:
    """Cost estimates for one model as its freeze changes (cheap to re-ask after each tick).

    Args:
        model: The model; it is never run or changed (a meta-device copy is).
        example_inputs: A tensor, a tuple of positional inputs or a dict of keyword inputs
            (shapes and dtypes matter, values do not). None: a batch of 2 by the package's
            default input rule (``base.modules.default_input_shape``: images at the model's
            own input size, or 224), or no activations when it has none. False: none.
        dtype: The training dtype of floating parameters, gradients, state and activations.
    """

    def __init__(
        self, model: nn.Module, example_inputs: Inputs | bool | None = None, dtype: Any = None
    ) -> None:
        self.model = require_module(model)
        self.dtype: torch.dtype = torch.float32 if dtype is None else dtype
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
        self.assumptions: list[str] = []
        self._default = False
        self._inputs: Inputs | None = self._pick_inputs(example_inputs)
        self._copy: nn.Module | None = None
        self._macs: list[ModuleMacs] = []
        self._saved: dict[tuple[bool, ...], ForwardMemory] = {}
        self.activation_error: str | None = None

    def _pick_inputs(self, example_inputs: Inputs | bool | None) -> Inputs | None:
        if example_inputs is False:
            self.assumptions.append("Activations not estimated (example_inputs=False).")
            return None
        if example_inputs is None or example_inputs is True:
            found = default_inputs(self.model)
            if found is None:
                self.assumptions.append(
                    "Activations not estimated: pass example_inputs (one batch) for a model "
                    "whose first weighted layer is not a Conv or Linear layer."
                )
            else:
                self.assumptions.append(
                    f"Activations for a default input of shape {tuple(found.shape)}."
                )
            self._default = found is not None
            return found
        if not isinstance(example_inputs, (torch.Tensor, tuple, list, dict)):
            raise TypeError(
                "example_inputs must be a tensor, a tuple/list of positional inputs, a dict of "
                f"keyword inputs, None or False; got {type(example_inputs).__name__}"
            )
        self.assumptions.append("Activations for the example inputs' batch as given.")
        return example_inputs

    def _prepare(self) -> nn.Module | None:
        """The meta-device copy, or None when the meta forward cannot run this model.

        Nothing real is ever run or copied: a model the meta device cannot trace (data-
        dependent ops, inputs that do not fit) gets no activation estimate and a note saying
        why, instead of a real forward on a real copy.
        """
        if self._copy is None and self._inputs is not None:
            try:
                self._copy = meta_copy(self.model, self.dtype)
                self._meta_inputs = to_meta(self._inputs, self.dtype)
                self._macs = module_macs(self._copy, self._meta_inputs)
            except Exception as exc:
                self._give_up(exc)
                return None
            self.assumptions.append(
                "Activations are the tensors autograd saves in one training-mode forward, "
                "and the total counts that forward's peak of live activations (saved so far "
                "plus transient feature maps), measured on a meta-device copy."
            )
        return self._copy

    def _give_up(self, exc: Exception) -> None:
        """No activations from now on, with the reason and the way out in the assumptions."""
        self._inputs, self._copy = None, None
        way_out = (
            "pass example_inputs (one batch the model takes)"
            if self._default
            else "check example_inputs, or pass example_inputs=False"
        )
        self.activation_error = f"{first_line(exc, limit=200)}; {way_out}"
        self.assumptions.append(f"Could not estimate activations: {self.activation_error}.")

    def _sync_copy(self, requires_grad: dict[str, bool]) -> nn.Module | None:
        twin = self._prepare()
        if twin is None:
            return None
        for name, p in twin.named_parameters():
            p.requires_grad_(requires_grad[name])
        twin.train()  # a training step; BatchNorm policies on the copy keep their layers in eval
        return twin

    def activation_bytes(self, requires_grad: dict[str, bool] | None = None) -> int:
        """Saved-for-backward bytes for the model's current freeze (or the given flags)."""
        return self.forward_memory(requires_grad).saved

    def forward_memory(self, requires_grad: dict[str, bool] | None = None) -> ForwardMemory:
        """Saved and peak activation bytes for the current freeze (or the given flags)."""
        if self._inputs is None:
            return ForwardMemory(0, 0)
        flags = requires_grad or {n: p.requires_grad for n, p in self.model.named_parameters()}
        key = tuple(flags.values())
        if key not in self._saved:
            twin = self._sync_copy(flags)
            if twin is None:
                return ForwardMemory(0, 0)
            try:
                self._saved[key] = forward_memory(twin, self._meta_inputs)
            except Exception as exc:  # a branch only this freeze takes
                self._give_up(exc)
                return ForwardMemory(0, 0)
        return self._saved[key]

    def estimate(
        self, optimizer: str | torch.optim.Optimizer = "adamw", *, activations: bool = True
    ) -> CostEstimate:
        """The estimate for the model's freeze now, with the unfrozen one beside it."""
        states = _states_per_element(optimizer)
        now = self._estimate(states, activations, unfrozen=False)
        full = self._estimate(states, activations, unfrozen=True)
        return replace(now, unfrozen=full)

    def _estimate(self, states: int, activations: bool, *, unfrozen: bool) -> CostEstimate:
        size = self.dtype.itemsize
        params = list(self.model.parameters())  # de-duplicated: tied weights count once
        # Integer/bool tensors (int8 weights, 4-bit packed storage, counters) keep their own
        # element size; only floating ones train in ``dtype``. Only floating ones can train.
        trainable = sum(
            p.numel() for p in params if (unfrozen and p.is_floating_point()) or p.requires_grad
        )
        weights = sum(_stored_bytes(t, size) for t in [*params, *self.model.buffers()])
        flags = {n: unfrozen or p.requires_grad for n, p in self.model.named_parameters()}
        act = self.forward_memory(flags) if activations else ForwardMemory(0, 0)
        share = 1.0 if unfrozen else self._share(activations)
        notes = [*self.assumptions, f"{states} optimizer state tensors per trainable element."]
        if not (activations and self._inputs is not None):
            notes.append("backward_share estimated by parameter elements, in registration order.")
        return CostEstimate(
            weight_bytes=weights,
            grad_bytes=trainable * size,
            optimizer_state_bytes=trainable * size * states,
            activation_bytes=act.saved,
            backward_share=share,
            forward_peak_bytes=act.peak,
            assumptions=tuple(notes),
        )

    def _share(self, measured: bool) -> float:
        """Backward share from Linear/Conv MACs, or by parameter elements without a forward."""
        if measured and self._inputs is not None and self._prepare() is not None:
            # The meta copy mirrors the real flags (synced by activation_bytes), but read the
            # real model so the answer never depends on call order.
            real = dict(self.model.named_modules())
            return _backward_share([(c.macs, _trains(real[c.path])) for c in self._macs])
        work = [(p.numel(), p.requires_grad) for p in self.model.parameters()]
        return _backward_share(work)


def estimate_cost(
    model: nn.Module,
    optimizer: str | torch.optim.Optimizer = "adamw",
    dtype: torch.dtype = torch.float32,
    example_inputs: Inputs | bool | None = None,
) -> CostEstimate:
    """Estimate the memory of one training step of ``model`` under its current freeze.

    Example:
        >>> est = estimate_cost(model, "adamw")
        >>> est.summary()
        'training memory about 1.13 GiB, 3.4x less than unfrozen'

    Args:
        model: The model (not run, not changed).
        optimizer: "adam", "adamw" (two states per trainable element), "sgd" (none),
            "sgd_momentum", "rmsprop", "adagrad" (one), or an optimizer instance.
        dtype: Training dtype of floating tensors.
        example_inputs: One batch (tensor, positional tuple or keyword dict); None for a
            default batch of 2 images at the model's own input size (timm's
            ``pretrained_cfg``, a transformers ``config.image_size``, else 224) where it
            applies; False to skip activations. Activations are measured on a meta-device
            copy only; when that cannot run, they are left out and the assumptions say why.

    Raises:
        TypeError / ValueError: a bad argument (named); nothing is changed.
    """
    cost = CostModel(model, example_inputs, dtype)
    return cost.estimate(optimizer, activations=cost._inputs is not None)
