"""``check_distributed``: what a freeze will do wrong under DDP / FSDP, found before wrapping.

Every check looks at the model as it is (or at a deep copy of it), never at the caller's model
in a way that changes it: the forward/backward of check (a) and the SyncBatchNorm conversion of
check (c) run on copies.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from freeze_widgets.base.checks import require_module
from freeze_widgets.base.modules import default_input_shape
from freeze_widgets.base.wording import first_line
from freeze_widgets.checks.findings import Finding
from freeze_widgets.freezing.bn import bn_is_frozen, bn_state

__all__ = ["STRATEGIES", "Strategy", "check_distributed"]

Strategy = Literal["ddp", "fsdp", "fsdp1"]
#: What a multi-process fine-tune runs with: DDP or FSDP2 (``fully_shard``).
RunStrategy = Literal["ddp", "fsdp"]
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp", "fsdp1")


def check_distributed(
    model: nn.Module,
    strategy: Strategy = "ddp",
    example_inputs: Any = None,
    *,
    sync_batchnorm: bool = False,
) -> list[Finding]:
    """Preflight a frozen model for distributed training; the model is left untouched.

    Checks (each a :class:`~freeze_widgets.checks.findings.Finding` ``kind``):

    * ``unused_trainable`` (ddp): trainable parameters that get no gradient in one sample
      forward/backward, which DDP only tolerates with ``find_unused_parameters=True``;
    * ``fsdp1_mixed_unit`` (fsdp1): a wrap unit mixing frozen and trainable parameters, which
      FSDP1's ``FlatParameter`` rejects (docs/design.md, trap 12);
    * ``syncbn_unfreezes`` (``sync_batchnorm=True``, or frozen SyncBatchNorm already present):
      frozen BatchNorm that ``SyncBatchNorm.convert_sync_batchnorm`` turns back into a training
      layer (trap 13);
    * ``reentrant_checkpoint``: reentrant gradient checkpointing of trainable layers behind
      frozen ones, which then get no gradient (trap 14);
    * ``wrapped_before_freeze``: the model is already wrapped in DDP, so later ``requires_grad``
      changes are not seen (traps 8 and 11);
    * ``unused_check_skipped``: check (a) could not run (no inputs, the inputs do not fit, a
      model that cannot be copied, SyncBatchNorm on CPU, ...): the finding says why;
    * ``nothing_trainable``: every parameter is frozen, which DDP refuses to wrap;
    * ``syncbn_check_skipped``: the conversion of check (c) could not run on a copy.

    Nothing raises for what the model or the inputs do: each failure is a finding.

    Args:
        model: The model (or a DDP-wrapped model) with its freeze applied.
        strategy: ``"ddp"``, ``"fsdp"`` (FSDP2 ``fully_shard``) or ``"fsdp1"``.
        example_inputs: One input batch: a tensor, a tuple of positional inputs or a dict of
            keyword inputs. None builds a ``(2, 3, 32, 32)`` batch for models whose first
            layer is a 3-channel ``Conv2d``.
        sync_batchnorm: You will convert BatchNorm layers with ``convert_sync_batchnorm``.

    Returns:
        The findings, empty when the freeze is safe for this strategy.

    Example:
        >>> from torchvision.models import resnet18
        >>> from freeze_widgets import freeze, unfreeze
        >>> m = resnet18()
        >>> _ = freeze(m); _ = unfreeze(m, "fc")
        >>> check_distributed(m, "ddp")  # doctest: +SKIP
        []
    """
    require_module(model)
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be one of {STRATEGIES}; got {type(strategy).__name__}")
    if strategy not in STRATEGIES:
        choices = ", ".join(map(repr, STRATEGIES))
        raise ValueError(f"strategy must be one of {choices}; got {strategy!r}")
    findings: list[Finding] = []
    if isinstance(model, DistributedDataParallel):
        findings.append(_wrapped_finding())
        model = model.module
    if not any(p.requires_grad for p in model.parameters()):
        findings.append(_nothing_trainable(strategy))
    elif strategy == "ddp":
        findings += _unused_trainable(model, example_inputs)
    if strategy == "fsdp1":
        findings += _fsdp1_mixed_units(model)
    findings += _syncbn_findings(model, convert=sync_batchnorm)
    findings += _reentrant_checkpoint(model)
    return findings


# --------------------------------------------------------------------------- (e) wrapped


def _wrapped_finding() -> Finding:
    return Finding(
        "wrapped_before_freeze",
        "",
        "The model is already wrapped in DistributedDataParallel, which registered the "
        "trainable parameters when it wrapped: freezing or unfreezing now is not seen "
        "(unfrozen parameters get no synchronised gradient).",
        "Set the final requires_grad before wrapping; to unfreeze later, make those "
        "parameters trainable before wrapping with learning rate 0 and raise it at their "
        "epoch (finetune_distributed does this for unfreeze_schedule).",
    )


# --------------------------------------------------------------------------- (a) unused


def _default_inputs(model: nn.Module) -> torch.Tensor | None:
    """Small random inputs by the package's one default rule (32 px images: a cheap forward)."""
    shape = default_input_shape(model, image_size=32)
    p = next(iter(model.parameters()), None)
    if shape is None or p is None:
        return None
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return x.to(device=p.device, dtype=p.dtype)


def _outputs_sum(out: Any) -> torch.Tensor | None:
    """Sum of every floating tensor in a model output (tensor, sequence, mapping, ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return out.float().sum() if out.is_floating_point() and out.requires_grad else None
    if isinstance(out, Mapping):
        parts = [_outputs_sum(v) for v in out.values()]
    elif isinstance(out, (list, tuple)):
        parts = [_outputs_sum(v) for v in out]
    else:
        return None
    kept = [p for p in parts if p is not None]
    return torch.stack(kept).sum() if kept else None


def _nothing_trainable(strategy: str) -> Finding:
    refuses = (
        "DistributedDataParallel refuses such a module"
        if strategy == "ddp"
        else "nothing would train"
    )
    return Finding(
        "nothing_trainable",
        "",
        f"Every parameter is frozen: {refuses}.",
        "Unfreeze what should train (unfreeze(model, 'fc')) before wrapping.",
    )


def _skipped(why: str, fix: str) -> Finding:
    return Finding(
        "unused_check_skipped",
        "",
        f"Could not check for trainable parameters without a gradient: {why}.",
        fix,
    )


def _trial_run(model: nn.Module, inputs: Any, given: bool) -> tuple[nn.Module | None, Any]:
    """A forward of a training-mode copy of ``model``: ``(copy, output)``, or the finding."""
    try:
        trial = copy.deepcopy(model)  # a train-mode forward changes BN statistics: the copy's
    except Exception as exc:
        return None, _skipped(
            f"the model cannot be copied (copy.deepcopy failed: {first_line(exc, limit=160)}), "
            "and the check runs only on a copy",
            "Make the model deep-copyable, or check by hand that every trainable parameter "
            "gets a gradient.",
        )
    trial.train()
    for layer in trial.modules():
        if isinstance(layer, nn.SyncBatchNorm):
            # Local statistics: which parameters get a gradient does not depend on syncing,
            # and SyncBatchNorm refuses CPU tensors inside a process group.
            layer.forward = types.MethodType(_BatchNorm.forward, layer)  # type: ignore[method-assign]
    try:
        if isinstance(inputs, Mapping):
            return trial, trial(**inputs)
        if isinstance(inputs, tuple):
            return trial, trial(*inputs)
        return trial, trial(inputs)
    except Exception as exc:
        return None, _skipped(
            f"one training-mode forward on {_describe(inputs, given)} failed with "
            f"{first_line(exc, limit=200)}",
            _forward_fix(exc, given),
        )


def _describe(inputs: Any, given: bool) -> str:
    shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
    return f"example_inputs {shape}" if given else f"a default batch {shape}"


def _forward_fix(exc: Exception, given: bool) -> str:
    text = str(exc)
    if "more than 1 value per channel" in text:
        return "Pass example_inputs with at least 2 items: BatchNorm in training mode needs them."
    if "SyncBatchNorm" in text or "process group" in text.lower():
        return (
            "Run the check on the model before convert_sync_batchnorm (SyncBatchNorm runs only "
            "inside a process group, on GPU), or with sync_batchnorm=True on the plain model."
        )
    if given:
        return "Pass example_inputs= as one batch the model takes (a tensor, a tuple or a dict)."
    return "Pass example_inputs= (one batch: a tensor, a tuple or a dict of keyword inputs)."


def _unused_trainable(model: nn.Module, example_inputs: Any) -> list[Finding]:
    inputs = example_inputs if example_inputs is not None else _default_inputs(model)
    if inputs is None:
        return [
            _skipped(
                "no example inputs and the first layer is not a 3-channel Conv2d",
                "Pass example_inputs= (one batch: a tensor, a tuple or a dict of keyword inputs).",
            )
        ]
    trial, out = _trial_run(model, inputs, given=example_inputs is not None)
    if trial is None:
        return [out]
    loss = _outputs_sum(out)
    if loss is not None:
        try:
            loss.backward()
        except Exception as exc:
            return [
                _skipped(
                    f"the backward failed with {first_line(exc, limit=200)}",
                    _forward_fix(exc, True),
                )
            ]
    unused: dict[str, list[str]] = {}
    for name, p in trial.named_parameters():
        if p.requires_grad and p.grad is None:
            module, _, leaf = name.rpartition(".")
            unused.setdefault(module, []).append(leaf)
    return [
        Finding(
            "unused_trainable",
            module,
            f"Trainable parameter(s) {', '.join(leaves)} of {module or 'the root module'} get "
            "no gradient in a forward/backward; DDP then needs find_unused_parameters=True "
            "(slower, and it hides real bugs) or fails with 'Expected to have finished "
            "reduction'.",
            f"Freeze {module or 'them'} (freeze(model, {module!r})) or remove the module if the "
            "forward never uses it.",
        )
        for module, leaves in unused.items()
    ]


# --------------------------------------------------------------------------- (b) FSDP1 units


def _fsdp1_mixed_units(model: nn.Module) -> list[Finding]:
    """Wrap units an auto-wrap policy would build: every direct child, and the root's own."""
    units: list[tuple[str, list[nn.Parameter]]] = [("", list(model.parameters(recurse=False)))]
    units += [(name, list(child.parameters())) for name, child in model.named_children()]
    findings = []
    for path, params in units:
        flags = {p.requires_grad for p in params}
        if len(flags) < 2:
            continue
        frozen = sum(1 for p in params if not p.requires_grad)
        findings.append(
            Finding(
                "fsdp1_mixed_unit",
                path,
                f"{path or 'The root module'} mixes {frozen} frozen and {len(params) - frozen} "
                "trainable parameter tensors in one FSDP1 wrap unit: FlatParameter needs "
                "uniform requires_grad (use_orig_params=True accepts it but keeps gradient "
                "memory as if nothing were frozen).",
                "Use FSDP2 fully_shard (strategy 'fsdp'), which shards per parameter, or an "
                "auto_wrap_policy whose units follow the freeze boundary.",
            )
        )
    return findings


# --------------------------------------------------------------------------- (c) SyncBatchNorm


def _syncbn_findings(model: nn.Module, *, convert: bool) -> list[Finding]:
    findings = []
    fix = (
        'Use bn="frozen" (FrozenBatchNorm is not converted), or re-apply the freeze after '
        "converting: FreezeSpec.from_model(model).apply(converted)."
    )
    for path, mod in model.named_modules():
        if isinstance(mod, nn.SyncBatchNorm) and bn_is_frozen(mod) and bn_state(mod) == "train":
            findings.append(
                Finding(
                    "syncbn_unfreezes",
                    path,
                    f"{path} is a frozen SyncBatchNorm that is not kept in eval: its running "
                    "statistics update in training (a conversion dropped the BatchNorm "
                    "policy, unless the 'train' policy is what you want).",
                    fix,
                )
            )
    if not convert:
        return findings
    # Convert a copy and compare: whatever convert_sync_batchnorm does, this sees its effect.
    try:
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    except Exception as exc:
        return [
            *findings,
            Finding(
                "syncbn_check_skipped",
                "",
                "Could not check what convert_sync_batchnorm does to the frozen BatchNorm "
                f"layers: converting a copy failed with {first_line(exc, limit=160)}.",
                fix,
            ),
        ]
    for path, mod in model.named_modules():
        if not (isinstance(mod, _BatchNorm) and bn_is_frozen(mod) and bn_state(mod) != "train"):
            continue
        if isinstance(mod, nn.SyncBatchNorm):
            continue
        if bn_state(converted.get_submodule(path)) == "train":
            findings.append(
                Finding(
                    "syncbn_unfreezes",
                    path,
                    f"SyncBatchNorm.convert_sync_batchnorm replaces the frozen {path} by a new "
                    f"layer that drops its {bn_state(mod)!r} policy: its running statistics "
                    "would update again.",
                    fix,
                )
            )
    return findings


# --------------------------------------------------------------------------- (d) checkpointing


def _reentrant(module: nn.Module) -> bool:
    """Whether ``module`` runs its forward under reentrant activation checkpointing."""
    impl = getattr(module, "checkpoint_impl", None)  # torch's CheckpointWrapper
    if impl is not None and getattr(impl, "name", "") == "REENTRANT":
        return True
    if getattr(module, "gradient_checkpointing", False) is True:  # transformers layers
        fn = getattr(module, "_gradient_checkpointing_func", None)
        if isinstance(fn, functools.partial):
            return fn.keywords.get("use_reentrant", True) is not False
        return fn is not None
    return False


def _reentrant_checkpoint(model: nn.Module) -> list[Finding]:
    if getattr(model, "_require_grads_hook", None) is not None:
        return []  # transformers' enable_input_require_grads(): inputs carry requires_grad
    order = {id(p): i for i, p in enumerate(model.parameters())}
    frozen_at = [order[id(p)] for p in model.parameters() if not p.requires_grad]
    if not frozen_at:
        return []
    first_frozen = min(frozen_at)
    findings: list[Finding] = []
    covered: list[str] = []
    for path, mod in model.named_modules():
        if any(path.startswith(c + ".") for c in covered) or not _reentrant(mod):
            continue
        inside = [p for p in mod.parameters() if p.requires_grad]
        if not inside or min(order[id(p)] for p in inside) < first_frozen:
            continue
        covered.append(path)
        findings.append(
            Finding(
                "reentrant_checkpoint",
                path,
                f"{path} uses reentrant gradient checkpointing behind frozen layers: its inputs "
                "do not require grad, so its trainable parameters get no gradient.",
                "Checkpoint with use_reentrant=False (gradient_checkpointing_enable("
                "gradient_checkpointing_kwargs={'use_reentrant': False})) or call "
                "model.enable_input_require_grads().",
            )
        )
    return findings
