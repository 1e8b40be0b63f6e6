"""What every target shares: reading a config, the requires_grad map, the preview record.

A *grad map* is ``{name: trains}`` over ``model.named_parameters()`` (a tied parameter once,
under its first name): exactly what the trainers iterate, so every tool's rule is applied to
the same names it would see.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from freeze_widgets.base.checks import BnPolicy, require_eager_module
from freeze_widgets.base.wording import close_matches
from freeze_widgets.freezing.spec import FreezeSpec, covering_paths
from freeze_widgets.freezing.targets import resolve_targets, select

GradMap = dict[str, bool]


class InexpressibleError(ValueError):
    """The target cannot say what the spec says; ``nearest`` is the closest config it can say."""

    def __init__(self, message: str, nearest: dict[str, Any] | None, difference: str) -> None:
        super().__init__(message)
        self.nearest = nearest
        self.difference = difference


@dataclass(frozen=True)
class ConfigPreview:
    """What a config freezes and trains on one model, and how that differs from a spec.

    Attributes:
        target: The tool ("axolotl", ...).
        config: The config as read (freeze keys only).
        grad_map: ``{parameter name: trains}`` under the tool's own rules.
        notes: Surprises found (a prefix reaching layers 10-19, a ratio cutting a block, ...).
        spec_trains_but_frozen: Names the spec trains that the config freezes.
        spec_frozen_but_trains: Names the spec freezes that the config trains.
    """

    target: str
    config: dict[str, Any]
    grad_map: GradMap
    numels: dict[str, int]
    notes: tuple[str, ...] = ()
    spec_trains_but_frozen: tuple[str, ...] = ()
    spec_frozen_but_trains: tuple[str, ...] = ()
    compared: bool = field(default=False)

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(n for n, t in self.grad_map.items() if t)

    @property
    def frozen(self) -> tuple[str, ...]:
        return tuple(n for n, t in self.grad_map.items() if not t)

    @property
    def matches_spec(self) -> bool:
        """True when compared with a spec and no parameter differs."""
        return self.compared and not (self.spec_trains_but_frozen or self.spec_frozen_but_trains)

    def numel(self, names: Iterable[str]) -> int:
        return sum(self.numels[n] for n in names)

    def text(self) -> str:
        total = self.numel(self.grad_map)
        trains = self.numel(self.trainable)
        lines = [
            f"{self.target}: trains {trains:,} of {total:,} parameters "
            f"({len(self.trainable)} of {len(self.grad_map)} tensors)"
        ]
        if self.compared:
            if self.matches_spec:
                lines.append("same requires_grad map as the spec")
            for label, names in (
                ("the spec trains but this config freezes", self.spec_trains_but_frozen),
                ("the spec freezes but this config trains", self.spec_frozen_but_trains),
            ):
                if names:
                    shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
                    lines.append(f"{label} {self.numel(names):,} parameters: {shown}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def grad_map_of_spec(spec: FreezeSpec, model: nn.Module) -> GradMap:
    """The requires_grad map ``spec.apply(model)`` would give, without changing ``model``."""
    frozen = {id(p) for p in select(resolve_targets(model, spec.frozen, exact=True)).params}
    return {n: id(p) not in frozen for n, p in model.named_parameters()}


def spec_from_grad_map(model: nn.Module, grad_map: GradMap, bn: BnPolicy = "eval") -> FreezeSpec:
    """The FreezeSpec (shortest paths) that freezes exactly the names ``grad_map`` freezes."""
    named = dict(model.named_parameters())
    frozen = {id(named[n]) for n, trains in grad_map.items() if not trains}
    return FreezeSpec(tuple(covering_paths(model, lambda p: id(p) in frozen)), bn)


def compare(
    target: str,
    config: dict[str, Any],
    grad_map: GradMap,
    model: nn.Module,
    notes: Iterable[str],
    spec: FreezeSpec | None,
) -> ConfigPreview:
    """A ConfigPreview of ``grad_map``, compared with ``spec`` when one is given."""
    numels = {n: p.numel() for n, p in model.named_parameters()}
    if spec is None:
        return ConfigPreview(target, config, grad_map, numels, tuple(notes))
    wanted = grad_map_of_spec(spec, model)
    return ConfigPreview(
        target,
        config,
        grad_map,
        numels,
        tuple(notes),
        spec_trains_but_frozen=tuple(n for n, t in wanted.items() if t and not grad_map[n]),
        spec_frozen_but_trains=tuple(n for n, t in wanted.items() if not t and grad_map[n]),
        compared=True,
    )


def difference_text(wanted: GradMap, got: GradMap, model: nn.Module) -> str:
    """``"trains 1,024 parameters the spec freezes (...); freezes 64 the spec trains (...)"``."""
    numels = {n: p.numel() for n, p in model.named_parameters()}
    extra = [n for n in wanted if got[n] and not wanted[n]]
    missing = [n for n in wanted if wanted[n] and not got[n]]
    parts = []
    for verb, names in (("trains", extra), ("freezes", missing)):
        if names:
            shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            parts.append(f"{verb} {sum(numels[n] for n in names):,} parameters ({shown})")
    return "; ".join(parts) or "no difference"


def load_config(config: object, target: str) -> dict[str, Any]:
    """A config as a dict: a mapping as is, or YAML / JSON text parsed.

    Raises:
        TypeError: ``config`` is neither text nor a mapping.
        ValueError: the text is not valid YAML / JSON, or not a mapping of keys.
    """
    if isinstance(config, Mapping):
        data: object = dict(config)
    elif isinstance(config, str):
        data = _parse_text(config, target)
    else:
        raise TypeError(
            f"config must be YAML/JSON text or a dict of {target} keys; got {type(config).__name__}"
        )
    numbered = target == "fts"  # a Finetuning-Scheduler schedule is keyed by phase number
    key_types = (str, int) if numbered else (str,)
    if not isinstance(data, dict) or not all(isinstance(k, key_types) for k in data):
        raise ValueError(
            f"{target} config must be a mapping of keys to values (as in the tool's YAML file); "
            f"got {type(data).__name__}"
        )
    return data


def _parse_text(text: str, target: str) -> object:
    if not text.strip():
        return {}
    try:
        import yaml  # PyYAML, installed with jupyterlab; JSON works without it
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{target} config: PyYAML is not installed (pip install pyyaml), and the text is "
                f"not JSON either ({exc})"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{target} config is not valid YAML{at}: {problem}") from None


def dump_config(data: Mapping[str, Any], header: str = "") -> str:
    """YAML text for ``data`` (keys in the given order), with ``header`` as comment lines."""
    try:
        import yaml
    except ImportError:  # JSON is valid YAML
        body = json.dumps(dict(data), indent=2) + "\n"
    else:
        body = yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, width=10_000)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + body


def check_keys(data: Mapping[str, Any], allowed: Mapping[str, str], target: str) -> None:
    """Refuse keys outside ``allowed`` (name -> what it is), naming close matches.

    Raises:
        ValueError: an unknown key; the message lists the keys this target reads.
    """
    for key in data:
        if key not in allowed:
            close = close_matches(key, list(allowed))
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown {target} key {key!r}.{hint} Freeze keys read here: "
                f"{', '.join(allowed)}. Pass only the freeze part of the config."
            )


def get_typed(data: Mapping[str, Any], key: str, kinds: tuple[type, ...], default: Any) -> Any:
    """``data[key]`` checked against ``kinds`` (a bool is never an int here)."""
    value = data.get(key, default)
    if value is None and default is None:
        return None
    bad_bool = isinstance(value, bool) and bool not in kinds
    if bad_bool or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"{key} must be {names}; got {type(value).__name__} {value!r}")
    return value


def string_list(data: Mapping[str, Any], key: str) -> list[str]:
    """``data[key]`` as a list of strings (a single string is one item)."""
    value = data.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings; got {value!r}")
    return value


def require_model(model: object) -> nn.Module:
    module = require_eager_module(model)
    if next(module.parameters(), None) is None:
        raise ValueError("the model has no parameters, so no config can freeze anything in it")
    return module


def prefix_overreach(prefix: str, names: Iterable[str]) -> list[str]:
    """Rows a literal prefix reaches past its own name: ``layers.1`` -> ``layers.10`` ...

    A name counts when it starts with ``prefix`` but the next character continues the same
    path component (``model.layers.1`` followed by ``0.mlp`` ...).
    """
    rows: dict[str, None] = {}
    for name in names:
        reaches = name.startswith(prefix) and len(name) > len(prefix) and prefix[-1:] != "."
        if reaches and name[len(prefix)] != ".":
            end = name.find(".", len(prefix))
            rows[name if end < 0 else name[:end]] = None
    return list(rows)


def layer_blocks(model: nn.Module) -> list[str]:
    """Paths of the repeated blocks (children of every ``nn.ModuleList`` / ``nn.Sequential``)."""
    out = []
    for path, mod in model.named_modules():
        if isinstance(mod, (nn.ModuleList, nn.Sequential)):
            out += [f"{path}.{c}" if path else c for c, _ in mod.named_children()]
    return out


def reachable(paths: list[str], names: Iterable[str]) -> list[str]:
    """Paths that name some parameter name; a tied module reached only under another name
    (GPT-2's ``lm_head`` holds ``transformer.wte.weight``) would match nothing in a name rule."""
    listed = list(names)
    return [p for p in paths if any(n == p or n.startswith(p + ".") for n in listed)]
