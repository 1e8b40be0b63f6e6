"""FreezeSpec: a freeze as data (the shortest list of frozen paths plus the BatchNorm policy)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._helpers import check_bn_policy, require_module
from .bn import bn_state, is_batchnorm
from .change import FreezeChange
from .freezing import resolve_targets, retarget, select

__all__ = ["FreezeSpec", "frozen_paths"]


def frozen_paths(model: nn.Module) -> list[str]:
    """Highest fully-frozen module paths, plus frozen parameters of partly-frozen modules."""
    out: list[str] = []

    def walk(path: str, mod: nn.Module) -> None:
        ps = list(mod.parameters())
        frozen = sum(1 for p in ps if not p.requires_grad)
        if not ps or frozen == 0:
            return
        if frozen == len(ps):
            out.append(path)
            return
        prefix = f"{path}." if path else ""
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                out.append(prefix + name)
        for name, child in mod.named_children():
            walk(prefix + name, child)

    walk("", model)
    return out


def _check_bn(bn: object, argument: str) -> str:
    """``check_bn_policy`` for a spec: the message says which document or field is wrong."""
    try:
        checked = check_bn_policy(bn, argument="bn")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{argument}: {exc}") from None
    assert checked is not None
    return checked


@dataclass(frozen=True)
class FreezeSpec:
    """A freeze as data: the shortest list of frozen paths plus the BatchNorm policy.

    ``""`` in ``frozen`` means the whole model. Round-trips through JSON and can be written out
    as plain PyTorch code with :meth:`to_code`. Paths are stored exact, never as patterns
    (docs/design.md, trap 10).
    """

    frozen: tuple[str, ...] = ()
    bn: str = "eval"

    @classmethod
    def from_model(cls, model: nn.Module, *, bn: str | None = None) -> FreezeSpec:
        """Record the current ``requires_grad`` state of ``model``.

        The BatchNorm policy is read off the model (the first BatchNorm with a policy) unless
        given.
        """
        require_module(model)
        if bn is None:
            states = {bn_state(m) for m in model.modules() if is_batchnorm(m)} - {"train"}
            bn = "frozen" if "frozen" in states else "eval"
        return cls(tuple(frozen_paths(model)), _check_bn(bn, "FreezeSpec.from_model"))

    def apply(self, model: nn.Module) -> FreezeChange:
        """Make ``model`` frozen exactly at these paths and trainable elsewhere, in place.

        Raises:
            ValueError: a path does not exist in ``model`` (close matches named), or the policy
                is not one; the model is left unchanged.
        """
        _check_bn(self.bn, "FreezeSpec.bn")
        frozen = select(resolve_targets(require_module(model), self.frozen))
        return retarget(model, select(resolve_targets(model, [""])), frozen, self.bn)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": "freeze_widgets.FreezeSpec",
                "version": 1,
                "frozen": list(self.frozen),
                "bn": self.bn,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> FreezeSpec:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: the text is not a FreezeSpec JSON document (says what is wrong).
        """
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a FreezeSpec: invalid JSON ({exc})") from None
        if not isinstance(data, dict) or "frozen" not in data:
            raise ValueError(
                'not a FreezeSpec: expected a JSON object with a "frozen" list of paths '
                "(as written by FreezeSpec.to_json())"
            )
        frozen = data["frozen"]
        if not isinstance(frozen, list) or not all(isinstance(p, str) for p in frozen):
            raise ValueError('not a FreezeSpec: "frozen" must be a list of path strings')
        return cls(tuple(frozen), _check_bn(data.get("bn", "eval"), "not a FreezeSpec"))

    def to_code(self) -> str:
        """Plain PyTorch (no freeze_widgets import) that reproduces this freeze on ``model``."""
        lines = [
            "# Freeze reproduced without freeze_widgets; run with `model` in scope.",
            "import torch",
            "",
        ]
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
            lines += [
                "",
                "# Frozen BatchNorm layers keep their running statistics: eval mode that",
                "# survives model.train().",
                "for n, m in model.named_modules():",
                "    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and is_frozen(n):",
                "        m.eval()",
                "        m.train = lambda mode=True, m=m: m",
            ]
        return "\n".join(lines) + "\n"
