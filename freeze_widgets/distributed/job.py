"""The description of one distributed run, written as JSON for the worker processes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["JobConfig"]


@dataclass
class JobConfig:
    """Everything a worker needs besides the model file; plain data so it travels as JSON.

    ``data`` is None (synthetic images), ``"dir:<path>"`` (an ImageFolder) or ``"file:<path>"``
    (a ``torch.save``-d Dataset). The model comes from ``model_file`` (a ``torch.save``-d
    module) or, from the CLI, from ``model_name`` (a ``load_model`` name). ``schedule`` maps
    1-based epochs to the groups unfrozen at their start.
    """

    out_dir: str
    spec_json: str
    strategy: str = "ddp"
    epochs: int = 1
    steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    image_size: int = 32
    num_classes: int | None = None
    synthetic_n: int = 512
    seed: int = 0
    data: str | None = None
    model_file: str | None = None
    model_name: str | None = None
    pretrained: bool = True
    schedule: dict[int, list[str]] = field(default_factory=dict)
    save_rank_states: bool = False
    timeout_s: float = 600.0
    private_dir: bool = False  # out_dir is the run's own temporary folder (removed with it)
    live: bool = False  # rank 0 streams progress.jsonl; every rank watches for a stop file

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> JobConfig:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        raw["schedule"] = {int(k): list(v) for k, v in raw.get("schedule", {}).items()}
        return cls(**{k: v for k, v in raw.items() if k in known})
