"""ModuleTree: one record per module of a model, with live, de-duplicated parameter counts.

Nodes are stored in depth-first pre-order, so a node's subtree is the contiguous index range
``[node.index, node.end)``. Each unique parameter knows the set of nodes whose subtree contains
it (the union of the ancestor chains of every place it is held), which makes a freeze an
incremental update: only those nodes change, and a tied parameter is still counted once per
subtree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from freeze_widgets.base.checks import (
    BnPolicy,
    check_bn_policy,
    require_initialized,
    require_module,
)
from freeze_widgets.base.modules import param_numel
from freeze_widgets.base.wording import unknown_name_error
from freeze_widgets.freezing.bn import is_batchnorm, set_bn_policy
from freeze_widgets.freezing.change import FreezeChange
from freeze_widgets.freezing.targets import apply_freeze, freeze_through

__all__ = ["ModuleTree", "Node", "NodeKind", "NodeState", "ParamCounts", "count_parameters"]

NodeState = Literal["trainable", "frozen", "partial", "empty"]
"""A row's tick state: all / none / some of its parameters trainable, or it has none."""

NodeKind = Literal["module", "parameter"]
"""A module row, or a row for a parameter owned next to children (ViT's ``class_token``)."""


def percent(part: int, whole: int) -> str:
    if whole == 0 or part == 0:
        return "0%"
    pct = 100.0 * part / whole
    if pct >= 10:
        return f"{pct:.1f}%".replace(".0%", "%")
    text = f"{pct:.2g}"
    return f"{pct:.1e}%" if "e" in text else f"{text}%"


@dataclass(frozen=True)
class ParamCounts:
    """Parameter element counts; tied parameters counted once (docs/design.md, trap 4)."""

    total: int
    trainable: int
    frozen: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"trainable {self.trainable:,} of {self.total:,} "
            f"({percent(self.trainable, self.total)})"
        )


def count_parameters(model: nn.Module) -> ParamCounts:
    """Count the parameters of ``model`` (no forward pass, tied weights once).

    Example:
        >>> str(count_parameters(nn.Linear(2, 3)))
        'trainable 9 of 9 (100%)'
    """
    require_initialized(require_module(model), "count the parameters")
    total = trainable = 0
    for p in model.parameters():  # parameters() de-duplicates shared tensors
        n = param_numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    return ParamCounts(total, trainable, total - trainable)


@dataclass(eq=False)
class Node:
    """One module (or one parameter owned by a module that also has children).

    Attributes:
        path: Dotted path from the root (the root is ``""``); a valid freeze target.
        name: Last path component (the model's class name for the root).
        type_name: Module class name, or ``"Parameter"``.
        kind: ``"module"`` or ``"parameter"``.
        own: Elements in the module's own parameters (``recurse=False``).
        total: Elements in the subtree, each unique parameter once.
        trainable: Elements in the subtree with ``requires_grad``.
        shared_with: Other paths that hold a parameter this node holds (tied weights).
    """

    path: str
    name: str
    type_name: str
    kind: NodeKind
    depth: int
    index: int
    parent: int | None
    end: int = 0
    own: int = 0
    total: int = 0
    trainable: int = 0
    shape: tuple[int, ...] | None = None
    shared_with: tuple[str, ...] = ()
    children: list[int] = field(default_factory=list)

    @property
    def frozen(self) -> int:
        return self.total - self.trainable

    @property
    def state(self) -> NodeState:
        """The one place a row's state is decided; the UI shows what this says."""
        if self.total == 0:
            return "empty"
        if self.trainable == self.total:
            return "trainable"
        if self.trainable == 0:
            return "frozen"
        return "partial"

    @property
    def counts(self) -> ParamCounts:
        return ParamCounts(self.total, self.trainable, self.frozen)


class ModuleTree:
    """A model's ``named_children`` tree with live trainable / frozen counts.

    Example:
        >>> from torchvision.models import resnet18
        >>> tree = ModuleTree(resnet18())
        >>> _ = tree.set_frozen("layer1", True)
        >>> tree.node("layer1").state, tree.node("").state
        ('frozen', 'partial')
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = require_module(model)
        self.nodes: list[Node] = []
        self._index: dict[str, int] = {}
        self._modules: list[nn.Module | None] = []
        self._held: list[list[tuple[str, nn.Parameter]]] = []
        self._param_nodes: dict[int, list[int]] = {}
        self._params_by_name: dict[str, nn.Parameter] = {}
        self._build()

    # ------------------------------------------------------------------ building

    def _build(self) -> None:
        require_initialized(self.model, "show the model's parameters")
        self.nodes, self._modules, self._held = [], [], []
        self._index = {}
        self._add_module("", type(self.model).__name__, self.model, 0, None)
        holders: dict[int, list[int]] = {}
        params: dict[int, nn.Parameter] = {}
        for i, held in enumerate(self._held):
            for _, p in held:
                holders.setdefault(id(p), []).append(i)
                params[id(p)] = p
        self._param_nodes = {}
        self._params_by_name = {name: p for held in self._held for name, p in held}
        for pid, where in holders.items():
            covered: set[int] = set()
            for i in where:
                j: int | None = i
                while j is not None and j not in covered:
                    covered.add(j)
                    j = self.nodes[j].parent
            self._param_nodes[pid] = sorted(covered)
            numel = param_numel(params[pid])
            trainable = params[pid].requires_grad
            for j in covered:
                self.nodes[j].total += numel
                if trainable:
                    self.nodes[j].trainable += numel
            if len(where) > 1:
                for i in where:
                    others = tuple(self.nodes[k].path for k in where if k != i)
                    node = self.nodes[i]
                    node.shared_with = tuple(dict.fromkeys(node.shared_with + others))

    def _new_node(
        self, path: str, name: str, type_name: str, kind: NodeKind, depth: int, parent: int | None
    ) -> Node:
        node = Node(path, name, type_name, kind, depth, len(self.nodes), parent)
        self.nodes.append(node)
        self._index.setdefault(path, node.index)
        if parent is not None:
            self.nodes[parent].children.append(node.index)
        return node

    def _add_module(
        self, path: str, name: str, module: nn.Module, depth: int, parent: int | None
    ) -> None:
        node = self._new_node(path, name, type(module).__name__, "module", depth, parent)
        self._modules.append(module)
        own = list(module.named_parameters(recurse=False))
        node.own = sum(param_numel(p) for _, p in own)
        # Every registered name, not named_children(): that skips a module registered twice in
        # one parent (Sequential(lin, ReLU(), lin)), yet "2" is a valid freeze target. The second
        # node holds the same parameters, counted once like any tied parameter.
        children = [(n, c) for n, c in module._modules.items() if c is not None]
        prefix = f"{path}." if path else ""
        if children and own:
            # Parameters owned next to children (ViT's class_token) get rows of their own, so
            # they can be seen and frozen without touching the children.
            self._held.append([])
            for pname, p in own:
                pnode = self._new_node(
                    prefix + pname, pname, "Parameter", "parameter", depth + 1, node.index
                )
                pnode.own = param_numel(p)
                pnode.shape = tuple(p.shape)
                pnode.end = pnode.index + 1
                self._modules.append(None)
                self._held.append([(prefix + pname, p)])
        else:
            self._held.append([(prefix + pname, p) for pname, p in own])
        for cname, child in children:
            self._add_module(prefix + cname, cname, child, depth + 1, node.index)
        node.end = len(self.nodes)

    # ------------------------------------------------------------------ look-up

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __contains__(self, path: object) -> bool:
        return path in self._index

    @property
    def root(self) -> Node:
        return self.nodes[0]

    @property
    def counts(self) -> ParamCounts:
        """Counts for the whole model."""
        return self.root.counts

    def node(self, path: str) -> Node:
        """The node at ``path``.

        Raises:
            TypeError: ``path`` is not a string.
            ValueError: no such path; close matches are named.
        """
        if not isinstance(path, str):
            raise TypeError(f"path must be a dotted path string; got {type(path).__name__}")
        try:
            return self.nodes[self._index[path]]
        except KeyError:
            raise unknown_name_error(
                "module tree path",
                str(path),
                list(self._index),
                way_out="Paths are those of named_modules() and named_parameters().",
            ) from None

    def module(self, path: str) -> nn.Module | None:
        """The module behind a module node (None for a parameter node)."""
        return self._modules[self.node(path).index]

    def subtree(self, path: str) -> list[Node]:
        node = self.node(path)
        return self.nodes[node.index : node.end]

    # ------------------------------------------------------------------ changing

    def set_frozen(self, path: str, frozen: bool, *, bn: BnPolicy = "eval") -> list[Node]:
        """Freeze or unfreeze the subtree at ``path`` in the model, updating counts in place.

        Only the nodes whose subtree holds a changed parameter are touched (the subtree and its
        ancestors, plus the other holders of a tied parameter), not the whole model.

        Returns:
            The nodes whose counts, state or type changed.
        """
        node = self.node(path)
        if not isinstance(frozen, bool):
            raise TypeError(f"frozen must be True or False; got {type(frozen).__name__}")
        check_bn_policy(bn)
        seen: set[int] = set()
        params: list[nn.Parameter] = []
        names: list[str] = []
        bns: dict[str, nn.Module] = {}
        for i in range(node.index, node.end):
            for name, p in self._held[i]:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
                    names.append(name)
            mod = self._modules[i]
            if mod is not None and is_batchnorm(mod):
                bns[self.nodes[i].path] = mod
        return self._after_change(
            apply_freeze(self.model, params, names, bns, frozen=frozen, bn=bn)
        )

    def freeze_through(self, path: str, *, bn: BnPolicy = "eval") -> list[Node]:
        """Freeze everything up to and including the row ``path``; the rest trains.

        The model changes through the core :func:`~freeze_widgets.freezing.targets.freeze_through`;
        only the nodes holding a flipped parameter (or a swapped module) are updated.

        Returns:
            The nodes whose counts, state or type changed.
        """
        self.node(path)  # an unknown row names its close matches before any change
        return self._after_change(freeze_through(self.model, path, bn=bn))

    def _after_change(self, change: FreezeChange) -> list[Node]:
        touched: set[int] = set()
        for names, sign in ((change.frozen, -1), (change.unfrozen, 1)):
            for name in names:
                p = self._params_by_name.get(name)
                if p is None:  # a name the tree holds under another path (a tied alias)
                    p = self.model.get_parameter(name)
                for j in self._param_nodes[id(p)]:
                    self.nodes[j].trainable += sign * param_numel(p)
                    touched.add(j)
        for path in change.replaced:
            i = self._index[path]
            mod = self.model.get_submodule(path)
            self._modules[i] = mod
            self.nodes[i].type_name = type(mod).__name__
            touched.add(i)
        return [self.nodes[i] for i in sorted(touched)]

    def set_bn_policy(self, bn: BnPolicy) -> list[Node]:
        """Re-apply a BatchNorm policy to every frozen BatchNorm layer.

        Returns:
            The nodes whose module was swapped (their type changed).
        """
        check_bn_policy(bn)
        return self._after_change(set_bn_policy(self.model, bn))

    def refresh(self) -> None:
        """Re-read structure and ``requires_grad`` after changes made outside this tree."""
        self._build()

    def __repr__(self) -> str:
        return f"ModuleTree({type(self.model).__name__}: {len(self.nodes)} nodes, {self.counts})"
