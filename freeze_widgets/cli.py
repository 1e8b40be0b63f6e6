"""``python -m freeze_widgets finetune``: the verified fine-tune from a spec file, torchrun-ready.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) every process
runs this same command and joins the job; without them it runs as a single process. Rank 0
writes the report: the merged verification, one verdict per rank, and the loss curve.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from freeze_widgets.data.synthetic import DEFAULT_SYNTHETIC_CLASSES
from freeze_widgets.distributed.job import JobConfig
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.training.options import (
    FineTuneOptions,
    require_count,
    require_positive_number,
)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m freeze_widgets")
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser(
        "finetune",
        help="fine-tune a torchvision model under a saved freeze and verify every rank",
        description="Run unchanged under torchrun --nproc-per-node N [--nnodes ...].",
    )
    ft.add_argument("--model", required=True, help="a load_model name, e.g. resnet18")
    ft.add_argument("--spec", required=True, type=Path, help="FreezeSpec JSON file")
    ft.add_argument("--report", required=True, type=Path, help="where rank 0 writes the JSON")
    ft.add_argument("--data", type=Path, help="ImageFolder directory (default: synthetic)")
    ft.add_argument("--epochs", type=int, default=1)
    ft.add_argument("--steps", type=int, help="optimizer steps per rank (overrides --epochs)")
    ft.add_argument("--batch-size", type=int, default=32, help="per process")
    ft.add_argument("--lr", type=float, default=1e-3)
    ft.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], default="adamw")
    ft.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    ft.add_argument("--num-classes", type=int, help="default: the data's classes")
    ft.add_argument("--image-size", type=int, default=32)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--no-pretrained", action="store_true", help="random weights")
    ft.add_argument(
        "--unfreeze",
        action="append",
        default=[],
        metavar="EPOCH=GROUP[,GROUP]",
        help="unfreeze groups at the start of an epoch (repeatable), e.g. 2=layer4",
    )
    ft.add_argument("--save-state", type=Path, help="rank 0 saves the trained state_dict here")
    ft.add_argument("--timeout", type=float, default=1800.0, help="collective timeout, seconds")
    from freeze_widgets.verify import checkpoint

    checkpoint.add_cli(sub)
    return parser


def _schedule(items: Sequence[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for item in items:
        epoch, sep, groups = item.partition("=")
        if not sep or not epoch.strip().isdigit():
            raise SystemExit(f"--unfreeze expects EPOCH=GROUP[,GROUP]; got {item!r}")
        out.setdefault(int(epoch), []).extend(g for g in groups.split(",") if g)
    return out


def _num_classes(args: argparse.Namespace) -> int:
    if args.num_classes is not None:
        return int(args.num_classes)
    if args.data is None:
        return DEFAULT_SYNTHETIC_CLASSES
    return sum(1 for p in Path(args.data).iterdir() if p.is_dir())


def _checked(args: argparse.Namespace) -> tuple[FineTuneOptions, FreezeSpec]:
    """Every argument checked before any training, so a bad one costs nothing.

    The same :class:`FineTuneOptions` check as ``finetune`` (``--epochs 0`` is an error, not
    a run of -128 steps), the spec read, and the output paths tried for writing.

    Raises:
        SystemExit: naming the bad argument and the way out (exit status 1).
    """
    try:
        options = FineTuneOptions.checked(
            epochs=args.epochs,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer=args.optimizer,
            seed=args.seed,
        )
        require_count(args.image_size, "image_size")
        if args.num_classes is not None:
            require_count(args.num_classes, "num_classes")
        require_positive_number(args.timeout, "timeout")
    except (TypeError, ValueError) as exc:
        name, _, rest = str(exc).partition(" ")  # messages start with the argument's name
        raise SystemExit(f"error: --{name.replace('_', '-')} {rest}") from None
    if args.data is not None and not args.data.is_dir():
        raise SystemExit(
            f"error: --data {args.data} is not a folder (an ImageFolder directory: one "
            "sub-folder per class); leave it out for synthetic images"
        )
    try:
        spec = FreezeSpec.from_json(args.spec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise SystemExit(f"error: --spec {args.spec}: {exc}") from None
    if os.environ.get("RANK", "0") == "0":  # only rank 0 writes
        for flag, path in (("--report", args.report), ("--save-state", args.save_state)):
            if path is not None:
                _require_writable(flag, path)
    return options, spec


def _require_writable(flag: str, path: Path) -> None:
    """``path`` can be written after training: a file (or none) in a writable folder.

    Nothing is created here; missing folders are created only when the report is written.
    """
    if path.is_dir():
        raise SystemExit(f"error: {flag} {path} is a folder; give a file path")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise SystemExit(f"error: {flag} {path} exists and is not writable")
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise SystemExit(
            f"error: {flag} {path} cannot be written ({folder} is not a writable folder); "
            "choose a path in a folder you can write to"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns 0 when verified, 2 when a frozen tensor moved or ranks differ.

    A bad argument exits with status 1 and a one-line message before any training.
    """
    args = build_parser().parse_args(argv)
    if args.command == "verify-checkpoint":
        from freeze_widgets.verify import checkpoint

        return checkpoint.run_cli(args)
    options, spec = _checked(args)  # fail before joining or training
    out = Path(tempfile.mkdtemp(prefix="fw-cli-"))
    job = JobConfig(
        out_dir=str(out),
        spec_json=spec.to_json(),
        strategy=args.strategy,
        epochs=options.epochs,
        steps=options.steps,
        batch_size=options.batch_size,
        lr=options.lr,
        optimizer=options.optimizer,
        image_size=args.image_size,
        num_classes=_num_classes(args),
        seed=options.seed,
        data=f"dir:{args.data.resolve()}" if args.data is not None else None,
        model_name=args.model,
        pretrained=not args.no_pretrained,
        schedule=_schedule(args.unfreeze),
        timeout_s=args.timeout,
    )
    from freeze_widgets.distributed.worker import run_job

    try:
        data = run_job(job)
        if data is None:  # not rank 0
            return 0
        from freeze_widgets.distributed.report import DistributedFineTuneReport

        report = DistributedFineTuneReport.from_dict(data)
        data = {"ok": report.ok, "summary": report.summary(), **data}
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(data, indent=1), encoding="utf-8")
        if args.save_state is not None:
            args.save_state.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "state.pt", args.save_state)
        print(report.summary(), file=sys.stderr)
        return 0 if report.ok else 2
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        shutil.rmtree(out, ignore_errors=True)
