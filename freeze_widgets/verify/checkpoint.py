"""``verify_checkpoint``: a saved checkpoint holds what the freeze promised, bit for bit.

Frozen tensors are bit-identical to the base, trainable ones are present (and moved, when
asked), nothing is missing or unexpected, every shard is there. A PEFT adapter folder is checked
as what it is: LoRA factors with the shapes the base's layers and the adapter's rank imply, one
pair for every targeted layer, and ``modules_to_save`` copies compared like any tensor. Tensors
are read one at a time (:mod:`freeze_widgets.verify.sources`) and compared through the
snapshot's fingerprint, so ``-0.0`` vs ``0.0`` and NaN payloads count as changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freeze_widgets.base.checks import BnPolicy
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.verify.rows import (
    VerificationRow,
    VerificationStatus,
    covered_by,
    row_status,
)
from freeze_widgets.verify.snapshot import fingerprint, max_abs_diff
from freeze_widgets.verify.sources import TensorSource, UnreadableTensor, open_source

__all__ = ["CheckpointReport", "verify_checkpoint"]

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_PEFT_PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")
_FAILED: tuple[VerificationStatus, ...] = (
    "MOVED", "no gradient path", "MISSING", "UNEXPECTED", "UNREADABLE", "BAD SHAPE",
)  # fmt: skip


@dataclass(frozen=True)
class CheckpointReport:
    """What :func:`verify_checkpoint` found: one row per tensor, and whole-file problems."""

    checkpoint: str
    format: str
    rows: tuple[VerificationRow, ...]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed

    @property
    def failed(self) -> list[VerificationRow]:
        return [r for r in self.rows if r.status in _FAILED]

    def summary(self) -> str:
        frozen = sum(1 for r in self.rows if r.was_frozen)
        head = (
            f"{self.checkpoint} ({self.format}): {len(self.rows)} tensors checked, {frozen} "
            f"frozen; " + ("OK: frozen tensors bit-identical, nothing missing or unexpected."
                           if self.ok else "FAILED:")
        )  # fmt: skip
        lines = [head, *(f"- {p}" for p in self.problems)]
        lines += [
            f"- {r.status}: {r.name}{f' ({r.note})' if r.note else ''}" for r in self.failed[:30]
        ]
        if len(self.failed) > 30:
            lines.append(f"- ... {len(self.failed) - 30} more")
        return "\n".join(lines)


def _frozen(name: str, spec: FreezeSpec) -> bool:
    return covered_by(name, spec.frozen)


def _kind(name: str) -> str:
    return "buffer" if name.rsplit(".", 1)[-1] in _BN_BUFFERS else "parameter"


def _compare(name: str, base: torch.Tensor, saved: torch.Tensor, frozen: bool, bn: BnPolicy,
             steps: int) -> VerificationRow:  # fmt: skip
    kind = _kind(name)
    if tuple(saved.shape) != tuple(base.shape):
        note = f"saved {tuple(saved.shape)}, model has {tuple(base.shape)}"
        return VerificationRow(name, kind, frozen, True, float("inf"), "BAD SHAPE", note)
    changed = saved.dtype != base.dtype or not fingerprint(saved).same_as(fingerprint(base))
    diff = max_abs_diff(base, saved) if changed else 0.0
    policy = bn if kind == "buffer" else ""
    status = row_status(kind, frozen, changed, steps=steps, bn_policy=policy)
    note = f"saved as {saved.dtype}, model has {base.dtype}" if saved.dtype != base.dtype else ""
    return VerificationRow(name, kind, frozen, changed, diff, status, note)


def _row(name: str, base: TensorSource, saved: TensorSource, spec: FreezeSpec,
         steps: int) -> VerificationRow:  # fmt: skip
    frozen = _frozen(name, spec)
    try:
        saved_t = saved.get(name)
    except UnreadableTensor as exc:
        return VerificationRow(
            name, _kind(name), frozen, False, float("nan"), "UNREADABLE", str(exc)
        )
    return _compare(name, base.get(name), saved_t, frozen, spec.bn, steps)


def _full_rows(base: TensorSource, saved: TensorSource, spec: FreezeSpec,
               steps: int) -> Iterator[VerificationRow]:  # fmt: skip
    for name in base.shapes:
        if name in saved.shapes:
            yield _row(name, base, saved, spec, steps)
        else:
            yield VerificationRow(name, _kind(name), _frozen(name, spec), False, 0.0, "MISSING")
    for name in saved.shapes:
        if name not in base.shapes:
            note = "not in the base model"
            yield VerificationRow(name, _kind(name), False, False, 0.0, "UNEXPECTED", note)


def _targets(target: str | list[str], module: str) -> bool:
    if isinstance(target, str):  # PEFT: a string is a regular expression over the full name
        return re.fullmatch(target, module) is not None
    return any(module == t or module.endswith(f".{t}") for t in target)


def _peft_rows(base: TensorSource, saved: TensorSource, spec: FreezeSpec,
               steps: int) -> Iterator[VerificationRow]:  # fmt: skip
    config: Any = saved.extra.get("config", {})
    rank = int(config.get("r") or 0)
    target: str | list[str] = config.get("target_modules") or []
    save: tuple[str, ...] = tuple(config.get("modules_to_save") or ())
    found: set[tuple[str, str]] = set()
    for key, shape in saved.shapes.items():
        name = key.removeprefix(_PEFT_PREFIX)
        lora = _LORA.match(name)
        if lora is not None:
            module, side = lora["module"], lora["side"]
            found.add((module, side))
            yield _lora_row(key, base, module, side, shape, rank)
        elif name in base.shapes:
            yield _compare(
                name, base.get(name), saved.get(key), _frozen(name, spec), spec.bn, steps
            )
        else:
            note = "neither a LoRA factor nor a tensor of the base model"
            yield VerificationRow(key, "parameter", False, False, 0.0, "UNEXPECTED", note)
    for name in base.shapes:
        module = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and _targets(target, module):
            for side in "AB":
                if (module, side) not in found:
                    note = "targeted layer without its adapter (saved from one rank only?)"
                    yield VerificationRow(f"{module}.lora_{side}.weight", "parameter", False,
                                          False, 0.0, "MISSING", note)  # fmt: skip
        elif _saved_module(module, save) and _PEFT_PREFIX + name not in saved.shapes:
            note = "in modules_to_save but not saved"
            yield VerificationRow(name, _kind(name), False, False, 0.0, "MISSING", note)


def _saved_module(module: str, save: tuple[str, ...]) -> bool:
    """Whether ``module`` is (inside) a layer named in ``modules_to_save``."""
    return any(f".{m}." in f".{module}." for m in save)


def _lora_row(key: str, base: TensorSource, module: str, side: str, shape: tuple[int, ...],
              rank: int) -> VerificationRow:  # fmt: skip
    weight = base.shapes.get(f"{module}.weight")
    if weight is None or len(weight) < 2:
        return VerificationRow(key, "parameter", False, False, 0.0, "UNEXPECTED",
                               f"no layer {module!r} with a weight in the base model")  # fmt: skip
    out_f, in_f = weight[0], weight[1]
    want = (rank, in_f) if side == "A" else (out_f, rank)
    if rank and tuple(shape[:2]) != want:
        note = f"shape {tuple(shape)}, expected {want} for r={rank} (one rank's shard?)"
        return VerificationRow(key, "parameter", False, True, float("nan"), "BAD SHAPE", note)
    return VerificationRow(key, "parameter", False, True, float("nan"), "ok", "LoRA factor")


def verify_checkpoint(
    base: nn.Module | str | Path,
    checkpoint: str | Path,
    spec: FreezeSpec | None = None,
    *,
    require_moved: bool = False,
) -> CheckpointReport:
    """Check a saved checkpoint against the base weights and the freeze.

    Args:
        base: The model before training (its current weights), or a checkpoint of them in any
            format this reads.
        checkpoint: A ``torch.save`` state dict file, a ``.safetensors`` file, a folder with
            ``model.safetensors.index.json`` (sharded), a PEFT adapter folder, or a
            ``torch.distributed.checkpoint`` folder.
        spec: The freeze. Default: the freeze of ``base`` when it is a module.
        require_moved: A trainable tensor equal to the base is a failure ("no gradient path").

    Returns:
        A :class:`CheckpointReport`; ``ok`` is False when a frozen tensor differs by even one
        bit, a tensor is missing, unexpected, unreadable or misshapen, or a shard is missing.

    Raises:
        TypeError: ``spec`` is neither a FreezeSpec nor None, or None with a path as ``base``.
        FileNotFoundError: ``base`` or ``checkpoint`` does not exist.
    """
    if spec is None:
        if not isinstance(base, nn.Module):
            raise TypeError("pass spec=FreezeSpec(...) when base is a path (it has no freeze)")
        spec = FreezeSpec.from_model(base)
    if not isinstance(spec, FreezeSpec):
        raise TypeError(f"spec must be a FreezeSpec or None; got {type(spec).__name__}")
    reference = open_source(base)
    if reference.problems:
        raise ValueError(f"the base cannot be read: {'; '.join(reference.problems)}")
    saved = open_source(checkpoint)
    steps = 1 if require_moved else 0
    rows = _peft_rows if saved.format == "peft" else _full_rows
    return CheckpointReport(
        str(checkpoint), saved.format, tuple(rows(reference, saved, spec, steps)),
        tuple(saved.problems),
    )  # fmt: skip


def add_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``verify-checkpoint BASE CKPT --spec spec.json`` on the CLI's subparsers."""
    cmd = sub.add_parser(
        "verify-checkpoint",
        help="check a saved checkpoint against the base weights and a saved freeze",
        description="Exit status 0: verified; 2: a frozen tensor differs, or something is "
        "missing, unexpected or unreadable.",
    )
    cmd.add_argument("base", type=Path, help="the weights before training (any format read)")
    cmd.add_argument("checkpoint", type=Path, help="file or folder: torch, safetensors, "
                     "sharded safetensors, PEFT adapter, torch.distributed.checkpoint")  # fmt: skip
    cmd.add_argument("--spec", required=True, type=Path, help="FreezeSpec JSON file")
    cmd.add_argument("--require-moved", action="store_true",
                     help="a trainable tensor equal to the base fails")  # fmt: skip
    cmd.add_argument("--report", type=Path, help="also write the rows as JSON here")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``verify-checkpoint``; prints the summary, returns the exit status."""
    spec = FreezeSpec.from_json(args.spec.read_text(encoding="utf-8"))
    report = verify_checkpoint(args.base, args.checkpoint, spec, require_moved=args.require_moved)
    print(report.summary())
    if args.report is not None:
        data = {"ok": report.ok, **dataclasses.asdict(report)}
        args.report.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return 0 if report.ok else 2
