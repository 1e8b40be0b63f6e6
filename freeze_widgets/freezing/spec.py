"""FreezeSpec: a freeze as data (the shortest list of frozen paths plus the BatchNorm policy)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from freeze_widgets.base.checks import (
    BnPolicy,
    check_bn_policy,
    require_eager_module,
    require_module,
    require_strings,
)
from freeze_widgets.freezing.bn import (
    bn_is_frozen,
    bn_state,
    is_batchnorm,
    peer_frozen_bn,
    peer_policy,
)
from freeze_widgets.freezing.change import FreezeChange
from freeze_widgets.freezing.lr_code import lr_groups_code
from freeze_widgets.freezing.targets import resolve_targets, retarget, select

__all__ = ["FreezeSpec", "covering_paths", "frozen_paths"]


def frozen_paths(model: nn.Module) -> list[str]:
    """Highest fully-frozen module paths, plus frozen parameters of partly-frozen modules."""
    require_module(model)
    return covering_paths(model, lambda p: not p.requires_grad)


def covering_paths(model: nn.Module, chosen: Callable[[nn.Parameter], bool]) -> list[str]:
    """The shortest module / parameter paths covering exactly the ``chosen`` parameters.

    The highest modules whose parameters are all chosen, plus chosen parameters of mixed
    modules. Linear in the model's size and depth: each module's "holds a chosen / holds
    another parameter" flags are computed once, bottom-up, instead of re-walking every subtree,
    and without recursion, so a 2,000-deep chain needs neither time nor a bigger stack.
    """
    flags: dict[int, tuple[bool, bool]] = {}  # id(module) -> (holds a chosen, holds another)
    for _, mod in reversed(_preorder(model)):
        own = [chosen(p) for p in mod.parameters(recurse=False)]
        below = [flags[id(child)] for child in mod.children()]
        flags[id(mod)] = (
            any(own) or any(c for c, _ in below),
            not all(own) or any(o for _, o in below),
        )
    out: list[str] = []
    stack = [("", model)]
    while stack:
        path, mod = stack.pop()
        some, other = flags[id(mod)]
        if not some:
            continue
        if not other:
            out.append(path)
            continue
        prefix = f"{path}." if path else ""
        out += [prefix + n for n, p in mod.named_parameters(recurse=False) if chosen(p)]
        stack += [(prefix + n, c) for n, c in reversed(list(mod.named_children()))]
    return out


def _preorder(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` parents before children, iteratively (no recursion limit)."""
    order: list[tuple[str, nn.Module]] = []
    stack = [("", model)]
    while stack:
        path, mod = stack.pop()
        order.append((path, mod))
        prefix = f"{path}." if path else ""
        stack += [(prefix + n, c) for n, c in reversed(list(mod.named_children()))]
    return order


def _check_bn(bn: object, argument: str) -> BnPolicy:
    """``check_bn_policy`` for a spec: the message says which document or field is wrong."""
    try:
        checked = check_bn_policy(bn, argument="bn")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{argument}: {exc}") from None
    assert checked is not None
    return checked


def _policy_in_force(model: nn.Module) -> BnPolicy:
    """The one BatchNorm policy of the frozen BatchNorm layers ("eval" when there are none)."""
    policies: dict[BnPolicy, list[str]] = {}
    for path, mod in _preorder(model):  # one iterative walk: deep models need no big stack
        # A peer's freeze reads as the policy it behaves like (Lightning, timm).
        policy = peer_policy(mod)
        if policy is None and is_batchnorm(mod) and bn_is_frozen(mod):
            policy = bn_state(mod)
        if policy is not None:
            policies.setdefault(policy, []).append(path or "(root)")
    if len(policies) > 1:
        found = "; ".join(f"{k}: {', '.join(v[:3])}" for k, v in sorted(policies.items()))
        raise ValueError(
            f"the frozen BatchNorm layers follow different policies ({found}), and a FreezeSpec "
            "holds one; pass bn='eval' / 'frozen' / 'train' to FreezeSpec.from_model, or make "
            "them agree first with set_bn_policy(model, ...)"
        )
    return next(iter(policies), "eval")


def _check_lr_mult(value: object) -> tuple[tuple[str, float], ...]:
    """Multipliers as sorted (path, number >= 0) pairs, from a dict or pairs."""
    if isinstance(value, dict):
        items: list[Any] = list(value.items())
    elif isinstance(value, (tuple, list)):
        items = list(value)
    else:
        raise TypeError(f"lr_mult must map paths to multipliers; got {type(value).__name__}")
    out: dict[str, float] = {}
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"lr_mult entries must be (path, number) pairs; got {item!r}")
        path, mult = item
        if not isinstance(path, str) or isinstance(mult, bool):
            raise TypeError(f"lr_mult entries must be (path, number); got {item!r}")
        if not isinstance(mult, (int, float)) or not (math.isfinite(mult) and mult >= 0):
            raise ValueError(f"lr_mult[{path!r}] must be a finite number >= 0; got {mult!r}")
        out[path] = float(mult)
    return tuple(sorted(out.items()))


def _peer_frozen_batchnorms(model: nn.Module, paths: list[str]) -> list[str]:
    """Parameterless frozen BatchNorm layers (timm's ``FrozenBatchNorm2d``) not under ``paths``.

    Their weight and bias became buffers, so ``frozen_paths`` cannot see them; without them a
    spec applied to a fresh copy would leave those layers training. One iterative walk
    (``_preorder``), and a set lookup per ancestor, so deep models stay linear.
    """
    covered = set(paths)
    if "" in covered:
        return []
    found = []
    for path, mod in _preorder(model)[1:]:
        if peer_frozen_bn(mod):
            parts = path.split(".")
            if not any(".".join(parts[:k]) in covered for k in range(1, len(parts) + 1)):
                found.append(path)
    return found


_FORMAT = "freeze_widgets.FreezeSpec"
# Version 1 has no learning-rate multipliers (older readers load it); 2 adds "lr_mult".
_VERSION = 2
_KEYS = ("format", "version", "frozen", "bn", "lr_mult")


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (``json`` would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f'not a FreezeSpec: the key "{key}" appears twice; keep one')
        out[key] = value
    return out


def _check_header(data: dict[str, Any]) -> None:
    """``format`` and ``version`` (when given) are this format's; no unknown keys."""
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise ValueError(
            f"not a FreezeSpec: unknown key(s) {', '.join(map(repr, unknown))}; a spec has "
            f"{', '.join(map(repr, _KEYS))}"
        )
    if data.get("format", _FORMAT) != _FORMAT:
        raise ValueError(f"not a FreezeSpec: format is {data['format']!r}, expected {_FORMAT!r}")
    version = data.get("version", _VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"not a FreezeSpec: version must be a positive int; got {version!r}")
    if version > _VERSION:
        raise ValueError(
            f"this FreezeSpec is version {version}, written by a newer freeze_widgets; this one "
            f"reads version {_VERSION}: upgrade freeze_widgets to read it"
        )


@dataclass(frozen=True)
class FreezeSpec:
    """A freeze as data: the shortest list of frozen paths plus the BatchNorm policy.

    ``""`` in ``frozen`` means the whole model. Round-trips through JSON and can be written out
    as plain PyTorch code with :meth:`to_code`. Paths are stored exact, never as patterns
    (docs/design.md, trap 10).
    """

    frozen: tuple[str, ...] = ()
    bn: BnPolicy = "eval"
    lr_mult: tuple[tuple[str, float], ...] = ()
    """Optional learning-rate multipliers by exact path (format version 2; see param_groups)."""

    def __post_init__(self) -> None:
        if isinstance(self.frozen, str) or not isinstance(self.frozen, (tuple, list)):
            raise TypeError(
                f"frozen must be a tuple of dotted paths; got {type(self.frozen).__name__}"
            )
        object.__setattr__(self, "frozen", tuple(require_strings(self.frozen, "frozen")))
        check_bn_policy(self.bn)
        object.__setattr__(self, "lr_mult", _check_lr_mult(self.lr_mult))

    @classmethod
    def from_model(cls, model: nn.Module, *, bn: BnPolicy | None = None) -> FreezeSpec:
        """Record the current ``requires_grad`` state of ``model`` and its BatchNorm policy.

        Without ``bn``, the policy is the one actually in force on the frozen BatchNorm layers
        ("train" included), so applying the spec reproduces their behaviour. A model without
        frozen BatchNorm layers records "eval".

        Raises:
            TypeError: ``model`` is not a module.
            ValueError: the frozen BatchNorm layers follow different policies (one spec holds
                one); the message names them. Pass ``bn=`` to choose one, or make them agree
                with ``set_bn_policy(model, ...)`` first.
        """
        require_module(model)
        if bn is None:
            bn = _policy_in_force(model)
        paths = frozen_paths(model)
        paths += _peer_frozen_batchnorms(model, paths)
        return cls(tuple(paths), _check_bn(bn, "FreezeSpec.from_model"))

    def apply(self, model: nn.Module) -> FreezeChange:
        """Make ``model`` frozen exactly at these paths and trainable elsewhere, in place.

        Paths are exact, never patterns (a name like ``r[1]`` is that name; docs/design.md,
        trap 10).

        Raises:
            TypeError: ``model`` is not an eager module (freeze before scripting).
            ValueError: a path does not exist in ``model`` (close matches named), or the policy
                cannot apply; the model is left unchanged.
        """
        _check_bn(self.bn, "FreezeSpec.bn")
        frozen = select(resolve_targets(require_eager_module(model), self.frozen, exact=True))
        return retarget(model, select(resolve_targets(model, [""])), frozen, self.bn)

    def to_json(self) -> str:
        """JSON; version 1 without multipliers (older readers load it), 2 with ``lr_mult``."""
        doc: dict[str, Any] = {
            "format": _FORMAT,
            "version": _VERSION if self.lr_mult else 1,
            "frozen": list(self.frozen),
            "bn": self.bn,
        }
        if self.lr_mult:
            doc["lr_mult"] = dict(self.lr_mult)
        return json.dumps(doc, indent=2)

    @classmethod
    def from_json(cls, text: str) -> FreezeSpec:
        """Parse :meth:`to_json` output, strictly: a document that could mean two things is refused.

        ``format`` and ``version`` may be left out (a hand-written spec), but when present they
        must be this format and a version this release reads; a repeated key (JSON keeps the
        last one silently), an unknown key and a nesting too deep to parse are errors.

        Raises:
            TypeError: ``text`` is not a string.
            ValueError: the text is not a FreezeSpec JSON document (says what is wrong).
        """
        if not isinstance(text, (str, bytes)):
            raise TypeError(f"text must be a JSON string; got {type(text).__name__}")
        try:
            data: Any = json.loads(text, object_pairs_hook=_no_repeated_keys)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a FreezeSpec: invalid JSON ({exc})") from None
        except RecursionError:
            raise ValueError("not a FreezeSpec: the JSON is nested too deeply to read") from None
        if not isinstance(data, dict) or "frozen" not in data:
            raise ValueError(
                'not a FreezeSpec: expected a JSON object with a "frozen" list of paths '
                "(as written by FreezeSpec.to_json())"
            )
        _check_header(data)
        frozen = data["frozen"]
        if not isinstance(frozen, list) or not all(isinstance(p, str) for p in frozen):
            raise ValueError('not a FreezeSpec: "frozen" must be a list of path strings')
        bn = _check_bn(data.get("bn", "eval"), "not a FreezeSpec")
        try:
            return cls(tuple(frozen), bn, _check_lr_mult(data.get("lr_mult", {})))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a FreezeSpec: {exc}") from None

    def to_code(self) -> str:
        """Plain PyTorch (no freeze_widgets import) that reproduces this freeze on ``model``.

        Frozen BatchNorm layers ("eval" and "frozen" policies) are put in eval mode, and their
        ``train`` is replaced by an instance of a small class the code defines, so
        ``model.train()`` leaves them in eval and ``torch.save(model)`` still pickles (a lambda
        would not). As with any pickled model, loading it needs that class defined again.
        """
        lines = ["# Freeze reproduced without freeze_widgets; run with `model` in scope.", ""]
        if "" in self.frozen:
            lines += ["frozen_paths = None  # the whole model", ""]
            hit = "True"
        else:
            lines.append("frozen_paths = [")
            lines += [f"    {p!r}," for p in self.frozen]
            lines += ["]", ""]
            hit = 'any(n == f or n.startswith(f + ".") for f in frozen_paths)'
        lines += [
            "def is_frozen(n):",
            f"    return {hit}",
            "",
            "# Collect ids first: a tied parameter is frozen if any of its names is.",
            "frozen_ids = {",
            "    id(p) for n, p in model.named_parameters(remove_duplicate=False) if is_frozen(n)",
            "}",
            "for p in model.parameters():",
            "    p.requires_grad_(id(p) not in frozen_ids)",
            "    if id(p) in frozen_ids:",
            "        p.grad = None  # a stale gradient would still move it under momentum",
        ]
        if self.bn in ("eval", "frozen"):
            lines += _KEEP_BN_IN_EVAL_CODE
        if self.lr_mult:  # the learning-rate multipliers, as plain param groups
            lines += ["", "", "# Learning-rate multipliers by path (longest path wins)."]
            lines += lr_groups_code(dict(self.lr_mult)).splitlines()
        return "\n".join(lines) + "\n"


_KEEP_BN_IN_EVAL_CODE = [
    "",
    "import torch",
    "",
    "",
    "class KeepInEval:",
    '    """Replaces a frozen BatchNorm\'s train(): model.train() leaves it in eval.',
    "",
    "    A class instance rather than a lambda, so torch.save(model) still pickles.",
    '    """',
    "",
    "    def __init__(self, module):",
    "        self.module = module",
    "",
    "    def __call__(self, mode=True):",
    "        self.module.training = False",
    "        return self.module",
    "",
    "",
    "# Frozen BatchNorm layers keep their running statistics: eval mode that survives",
    "# model.train(). Every name of a shared layer is checked.",
    "for n, m in model.named_modules(remove_duplicate=False):",
    "    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and is_frozen(n):",
    "        m.eval()",
    '        m.__dict__["train"] = KeepInEval(m)',
]
