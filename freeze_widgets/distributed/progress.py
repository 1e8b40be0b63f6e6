"""Progress and Stop across processes: rank 0 appends a JSON line per step, a file says stop.

The launcher tails ``progress.jsonl`` in the job's folder while the workers run and touches
``stop`` when the user asks; every rank agrees on stopping through one small all-reduce per
step, so all ranks leave the loop at the same step (a rank that left alone would hang the
others in their next collective).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.distributed as dist

__all__ = ["PROGRESS_FILE", "STOP_FILE", "ProgressTail", "ProgressWriter", "stop_agreed"]

PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "stop"


class ProgressWriter:
    """Rank 0's side: one JSON line per optimizer step, flushed at once."""

    def __init__(self, out_dir: str | Path) -> None:
        self._file: TextIO = open(Path(out_dir) / PROGRESS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._start = time.perf_counter()

    def step(self, step: int, total: int, epoch: int, loss: float, acc: float) -> None:
        elapsed = time.perf_counter() - self._start
        line = {"step": step, "total": total, "epoch": epoch, "loss": loss, "acc": acc}
        line["elapsed"] = elapsed
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ProgressTail:
    """The launcher's side: the complete lines written since the last read."""

    def __init__(self, out_dir: str | Path) -> None:
        self._path = Path(out_dir) / PROGRESS_FILE
        self._offset = 0
        self._partial = ""

    def read(self) -> list[dict[str, Any]]:
        if not self._path.exists():
            return []
        with open(self._path, encoding="utf-8") as f:
            f.seek(self._offset)
            chunk = f.read()
            self._offset = f.tell()
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next read
        return [json.loads(line) for line in lines if line.strip()]


def stop_agreed(out_dir: str | Path, device: torch.device) -> bool:
    """True on every rank once any rank sees the stop file (a MAX all-reduce of one flag)."""
    seen = (Path(out_dir) / STOP_FILE).exists()
    flag = torch.tensor([1 if seen else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
